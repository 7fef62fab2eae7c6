// auditmw dashboard: a small client of the admin app's JSON API.
//
// Rules kept throughout:
// - Every value read from the log is written with textContent / DOM APIs, never parsed as
//   HTML, so an event holding "<script>" or "<img onerror>" shows as text and runs nothing.
// - URLs are relative to the mount point (the directory above this script), so the app
//   works mounted at any path.
// - The page's query string holds the filters and the page cursor: a view can be shared,
//   reloading restores it, and back/forward walk through earlier views. Times in it are
//   exact UTC instants (2026-12-07T17:22:05.123Z), so a link means the same to everyone.
// - Times are shown in the viewer's local time with its UTC offset
//   (2026-12-07 18:22:05.123 +01:00); the exact UTC timestamp is in the tooltip.
"use strict";

(() => {
  const scriptUrl = document.currentScript ? document.currentScript.src : document.baseURI;
  const ROOT = new URL("../", scriptUrl); // ".../static/dashboard.js" -> mount point

  const DATE_RE = /^\d{4}-\d{2}-\d{2}$/; // a local day (links made before times had hours)
  const INSTANT_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?Z$/;
  const LOCAL_INPUT_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/;
  const NARROW_SCREEN = "(max-width: 640px)"; // as in dashboard.css
  const LIMITS = ["25", "50", "100"];
  const DEFAULT_LIMIT = "50";
  const OUTCOMES = ["success", "failure", "denied"];
  const TEXT_FIELDS = ["search", "action", "resource_id", "user"];
  const DEBOUNCE_MS = 400;
  const MIN_SEARCH = 3; // the store's trigram index needs 3 characters

  const $ = (id) => document.getElementById(id);
  const form = $("filters");
  const inputs = {
    search: $("f-search"),
    action: $("f-action"),
    resource: $("f-resource"),
    resource_id: $("f-resource-id"),
    user: $("f-user"),
    outcome: $("f-outcome"),
    from: $("f-from"),
    to: $("f-to"),
    limit: $("f-limit"),
  };
  const table = $("events");
  const tbody = $("rows");
  const statusLine = $("status");
  const searchHint = $("f-search-hint");
  const chainBadge = $("chain");
  const streamsBadge = $("streams");
  const reverify = $("reverify");
  const pager = {
    nav: $("pager"),
    first: $("first"),
    prev: $("prev"),
    next: $("next"),
    label: $("page-label"),
  };
  const exportLinks = { csv: $("export-csv"), jsonl: $("export-jsonl") };
  const filterPanel = $("filter-panel");
  const filterCount = $("filter-count");
  const clearRange = $("clear-range");

  const clockFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
  const CHAIN_RESULT_MAX_AGE = 300; // seconds: how old a chain check a page load may show
  const numberFormat = new Intl.NumberFormat();

  // --- state -----------------------------------------------------------------------------

  /** The view: filters, the page cursor (null: newest page) and the cursors of the
   *  pages before it (for "Previous"; "" stands for the newest page). */
  let view = { filters: emptyFilters(), cursor: null, stack: [] };
  let nextCursor = null;
  let loadController = null;
  let loads = 0;
  let notice = ""; // said once in the status line after the next load

  function emptyFilters() {
    return {
      search: "",
      action: "",
      resource: "",
      resource_id: "",
      user: "",
      userKind: "", // "user_email" or "user_id"; "" means: guess from the value
      outcome: "",
      from: "",
      to: "",
      limit: DEFAULT_LIMIT,
    };
  }

  function sameFilters(a, b) {
    return Object.keys(a).every((key) => a[key] === b[key]);
  }

  function userParam(filters) {
    if (filters.userKind) return filters.userKind;
    return filters.user.includes("@") ? "user_email" : "user_id";
  }

  /** The view named by the page's query string (unknown or invalid values are dropped). */
  function viewFromUrl() {
    const query = new URLSearchParams(location.search);
    const get = (name) => (query.get(name) || "").trim();
    const filters = emptyFilters();
    filters.search = get("search");
    filters.action = get("action");
    filters.resource = get("resource");
    filters.resource_id = get("resource_id");
    if (get("user_email")) {
      filters.user = get("user_email");
      filters.userKind = "user_email";
    } else if (get("user_id")) {
      filters.user = get("user_id");
      filters.userKind = "user_id";
    }
    filters.outcome = OUTCOMES.includes(get("outcome")) ? get("outcome") : "";
    filters.from = instantFromUrl(get("from"), 0);
    filters.to = instantFromUrl(get("to"), 1);
    filters.limit = LIMITS.includes(get("limit")) ? get("limit") : DEFAULT_LIMIT;
    const stack = history.state && Array.isArray(history.state.stack) ? history.state.stack : [];
    return { filters, cursor: get("cursor") || null, stack };
  }

  /** The page's own query string for a view: filters as the user entered them. */
  function pageQuery(v) {
    const f = v.filters;
    const query = new URLSearchParams();
    for (const name of ["search", "action", "resource", "resource_id"]) {
      if (f[name]) query.set(name, f[name]);
    }
    if (f.user) query.set(userParam(f), f.user);
    if (f.outcome) query.set("outcome", f.outcome);
    if (f.from) query.set("from", f.from);
    if (f.to) query.set("to", f.to);
    if (f.limit !== DEFAULT_LIMIT) query.set("limit", f.limit);
    if (v.cursor) query.set("cursor", v.cursor);
    return query;
  }

  /** The API's filter parameters for a view (shared by the table, the histogram and the
   *  exports). */
  function apiFilters(f) {
    const query = new URLSearchParams();
    for (const name of ["search", "action", "resource", "resource_id", "outcome"]) {
      if (f[name]) query.set(name, f[name]);
    }
    if (f.user) query.set(userParam(f), f.user);
    if (f.from) query.set("from", f.from);
    if (f.to) query.set("to", f.to);
    return query;
  }

  /** A from/to value of the page's URL as a UTC instant: an instant as it is; a date (a
   *  link from before) as the start of that local day, or for "to" (exclusive) the next. */
  function instantFromUrl(value, offsetDays) {
    if (INSTANT_RE.test(value)) return value;
    if (!DATE_RE.test(value)) return "";
    const [year, month, day] = value.split("-").map(Number);
    const midnight = localDate(year, month, day + offsetDays);
    return Number.isNaN(midnight.getTime()) ? "" : midnight.toISOString();
  }

  /** A moment in local time (month from 1; a day past the month's end rolls over). */
  function localDate(year, month, day, hours = 0, minutes = 0, seconds = 0, ms = 0) {
    const date = new Date(2000, 0, 1, hours, minutes, seconds, ms);
    date.setFullYear(year, month - 1, day); // new Date() reads years 0-99 as 1900-1999
    return date;
  }

  /** The UTC instant a datetime-local input's value means in the viewer's time zone. */
  function instantOfLocalInput(value) {
    const match = LOCAL_INPUT_RE.exec(value);
    if (!match) return "";
    const [year, month, day, hours, minutes, seconds] = match
      .slice(1, 7)
      .map((part) => Number(part || 0));
    const ms = Number((match[7] || "0").padEnd(3, "0"));
    const date = localDate(year, month, day, hours, minutes, seconds, ms);
    return Number.isNaN(date.getTime()) ? "" : date.toISOString();
  }

  /** The value of a datetime-local input that shows ``instant`` in local time, written as
   *  the input itself writes it (no zero seconds, no trailing zeros). */
  function localInputValue(instant) {
    const date = parseTime(instant);
    if (!date) return "";
    const [seconds, ms] = [date.getSeconds(), date.getMilliseconds()];
    let value =
      `${pad(date.getFullYear(), 4)}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
      `T${pad(date.getHours())}:${pad(date.getMinutes())}`;
    if (seconds || ms) value += `:${pad(seconds)}`;
    if (ms) value += `.${pad(ms, 3).replace(/0+$/, "")}`;
    return value;
  }

  /** The instant a from/to input holds: the view's own value while the input still shows
   *  it (an instant may be finer than the input's milliseconds), else what was typed. */
  function instantOfInput(input, current) {
    if (current && input.value === localInputValue(current)) return current;
    return instantOfLocalInput(input.value);
  }

  function filtersFromForm() {
    const f = emptyFilters();
    for (const name of TEXT_FIELDS) f[name] = inputs[name].value.trim();
    f.resource = inputs.resource.value;
    f.outcome = inputs.outcome.value;
    f.from = instantOfInput(inputs.from, view.filters.from);
    f.to = instantOfInput(inputs.to, view.filters.to);
    f.limit = LIMITS.includes(inputs.limit.value) ? inputs.limit.value : DEFAULT_LIMIT;
    // Keep the kind of a user filter that came from a URL while its value is unchanged.
    if (f.user && f.user === view.filters.user) f.userKind = view.filters.userKind;
    return f;
  }

  function fillForm(f) {
    for (const name of TEXT_FIELDS) inputs[name].value = f[name];
    ensureOption(inputs.resource, f.resource);
    inputs.resource.value = f.resource;
    inputs.outcome.value = f.outcome;
    inputs.from.value = localInputValue(f.from);
    inputs.to.value = localInputValue(f.to);
    inputs.limit.value = f.limit;
  }

  /** Make sure a select offers ``value`` (a shared URL may name one not loaded yet). */
  function ensureOption(select, value) {
    if (!value || [...select.options].some((option) => option.value === value)) return;
    select.append(new Option(value, value));
  }

  // --- navigation ------------------------------------------------------------------------

  function go(newView, { replace = false } = {}) {
    view = newView;
    const query = pageQuery(view).toString();
    const url = location.pathname + (query ? `?${query}` : "");
    const state = { stack: view.stack };
    if (replace) history.replaceState(state, "", url);
    else history.pushState(state, "", url);
    showView();
  }

  /** Load what the view shows: its page of events, and the histogram when its filters
   *  changed (paging keeps it). */
  function showView() {
    updateExportLinks();
    updateFilterCount();
    clearRange.hidden = !(view.filters.from || view.filters.to);
    loadEvents();
    if (apiFilters(view.filters).toString() !== histogramQuery) loadHistogram();
  }

  function applyForm() {
    clearTimeout(debounceTimer);
    searchHint.hidden = true;
    const filters = filtersFromForm();
    if (sameFilters(filters, view.filters)) return;
    go({ filters, cursor: null, stack: [] });
  }

  let debounceTimer = 0;
  function applySoon() {
    clearTimeout(debounceTimer);
    // A search shorter than MIN_SEARCH cannot use the store's search index and may scan
    // the whole log: run it only when asked (Enter), not while the user is typing.
    const search = inputs.search.value.trim();
    const short = search.length > 0 && search.length < MIN_SEARCH;
    searchHint.hidden = !short;
    if (!short) debounceTimer = setTimeout(applyForm, DEBOUNCE_MS);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    applyForm();
  });
  for (const name of TEXT_FIELDS) {
    inputs[name].addEventListener("input", applySoon);
    if (name !== "search") inputs[name].addEventListener("change", applyForm);
  }
  for (const name of ["resource", "outcome", "from", "to", "limit"]) {
    inputs[name].addEventListener("change", applyForm);
  }
  $("clear").addEventListener("click", () => {
    fillForm(emptyFilters());
    applyForm();
  });
  $("refresh").addEventListener("click", () => {
    loadEvents();
    loadHistogram();
  });
  reverify.addEventListener("click", () => loadChainStatus(true));

  pager.next.addEventListener("click", () => {
    if (!nextCursor) return;
    go({ filters: view.filters, cursor: nextCursor, stack: [...view.stack, view.cursor || ""] });
  });
  pager.prev.addEventListener("click", () => {
    if (view.stack.length === 0) return;
    const stack = view.stack.slice(0, -1);
    go({ filters: view.filters, cursor: view.stack[view.stack.length - 1] || null, stack });
  });
  pager.first.addEventListener("click", () => {
    go({ filters: view.filters, cursor: null, stack: [] });
  });

  window.addEventListener("popstate", () => {
    view = viewFromUrl();
    fillForm(view.filters);
    showView();
  });

  function updateExportLinks() {
    const query = apiFilters(view.filters).toString();
    for (const [format, link] of Object.entries(exportLinks)) {
      const url = new URL(`export.${format}`, ROOT);
      url.search = query;
      link.href = url.href;
    }
  }

  // --- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(code, message, status) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  async function getJson(path, query, signal) {
    const url = new URL(path, ROOT);
    if (query) url.search = query.toString();
    let response;
    try {
      response = await fetch(url, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError("network", "The server could not be reached.", 0);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const error = body && typeof body === "object" ? body.error : null;
      const message =
        error && typeof error.message === "string"
          ? error.message
          : `${response.status} ${response.statusText || "error"}`;
      throw new ApiError(error && error.code ? String(error.code) : "http", message, response.status);
    }
    if (body === null || typeof body !== "object") {
      throw new ApiError("bad_response", "The server's answer was not JSON.", response.status);
    }
    return body;
  }

  // --- events table ----------------------------------------------------------------------

  async function loadEvents() {
    if (loadController) loadController.abort();
    const controller = new AbortController();
    loadController = controller;
    const query = apiFilters(view.filters);
    query.set("limit", view.filters.limit);
    if (view.cursor) query.set("cursor", view.cursor);

    setState("loading");
    showStateRow("Loading events…");
    statusLine.textContent = "Loading…";
    setPager(false);
    try {
      const body = await getJson("events", query, controller.signal);
      if (controller !== loadController) return;
      const events = Array.isArray(body.events) ? body.events : [];
      nextCursor = typeof body.next_cursor === "string" && body.next_cursor ? body.next_cursor : null;
      if (events.length === 0) {
        showEmpty();
        setState("empty");
      } else {
        renderEvents(events);
        setState("ready");
      }
      statusLine.textContent = [describePage(events.length), notice].filter(Boolean).join(" ");
      notice = "";
      setPager(true);
    } catch (error) {
      if (error.name === "AbortError" || controller !== loadController) return;
      if (view.cursor && ["foreign_cursor", "invalid_cursor"].includes(error.code)) {
        // A page link made for other filters (dates are local days: another time zone
        // makes other filters) or mangled: start again from the newest page.
        notice = "That page link does not fit these filters; showing the newest events.";
        go({ filters: view.filters, cursor: null, stack: [] }, { replace: true });
        return;
      }
      nextCursor = null;
      showError(error);
      setState("error");
      statusLine.textContent = "";
      setPager(true);
    } finally {
      if (controller === loadController) {
        loadController = null;
        loads += 1;
        table.dataset.loads = String(loads);
      }
    }
  }

  function setState(state) {
    table.dataset.state = state;
    table.setAttribute("aria-busy", state === "loading" ? "true" : "false");
  }

  function pageNumber() {
    // Known when we walked here; a shared link to a later page does not say which one.
    return view.cursor && view.stack.length === 0 ? null : view.stack.length + 1;
  }

  function describePage(count) {
    if (count === 0) return "";
    const page = pageNumber();
    const events = `${numberFormat.format(count)} event${count === 1 ? "" : "s"}`;
    if (page === null) return `Showing ${events}.`;
    const first = (page - 1) * Number(view.filters.limit) + 1;
    const last = first + count - 1;
    return `Showing events ${numberFormat.format(first)}–${numberFormat.format(last)}.`;
  }

  function setPager(enabled) {
    const page = pageNumber();
    pager.first.disabled = !enabled || !view.cursor;
    pager.prev.disabled = !enabled || view.stack.length === 0;
    pager.next.disabled = !enabled || !nextCursor;
    pager.label.textContent = page === null ? "Later page" : `Page ${page}`;
    // A single page needs no pager (hidden only once loaded, so it does not flicker).
    if (enabled) pager.nav.hidden = pager.first.disabled && pager.prev.disabled && !nextCursor;
  }

  function showStateRow(text, { alert = false } = {}) {
    const cell = el("td", { colspan: "7" });
    if (alert) cell.setAttribute("role", "alert");
    cell.append(text);
    const row = el("tr", { class: "state-row" }, cell);
    tbody.replaceChildren(row);
    return cell;
  }

  function hasFilters() {
    return !sameFilters({ ...view.filters, limit: DEFAULT_LIMIT }, emptyFilters());
  }

  function showEmpty() {
    if (view.cursor) {
      showStateRow("No more events.");
    } else if (hasFilters()) {
      const cell = showStateRow("No events match these filters. ");
      const clear = el("button", { type: "button", class: "link" }, "Clear filters");
      clear.addEventListener("click", () => $("clear").click());
      cell.append(clear);
    } else {
      showStateRow("The audit log is empty.");
    }
  }

  function showError(error) {
    const cell = showStateRow("", { alert: true });
    cell.classList.add("error");
    cell.append(
      el("strong", {}, "Could not load events: "),
      el("span", { class: "error-message" }, error.message),
      " ",
    );
    const retry = el("button", { type: "button", class: "link" }, "Try again");
    retry.addEventListener("click", loadEvents);
    cell.append(retry);
  }

  function renderEvents(events) {
    const rows = [];
    events.forEach((event, index) => {
      const detailId = `event-detail-${index}`;
      const toggle = el(
        "button",
        { type: "button", class: "link toggle", "aria-expanded": "false", "aria-controls": detailId },
        "View",
      );
      toggle.setAttribute("aria-label", `Details of ${text(event.action)} at ${text(event.timestamp)}`);
      const detailRow = el("tr", { class: "detail-row", id: detailId, hidden: "" });
      toggle.addEventListener("click", () => {
        const open = toggle.getAttribute("aria-expanded") !== "true";
        if (open && !detailRow.firstChild) detailRow.append(detailCell(event));
        detailRow.hidden = !open;
        toggle.setAttribute("aria-expanded", String(open));
        toggle.textContent = open ? "Hide" : "View";
      });
      const row = el(
        "tr",
        { class: "event-row", "data-id": text(event.id) },
        el("td", { class: "time" }, timeElement(event.timestamp)),
        el("td", { class: "user" }, userElement(event)),
        el("td", { class: "action" }, el("code", {}, text(event.action))),
        el("td", { class: "resource" }, ...resourceParts(event)),
        el("td", { class: "outcome" }, outcomeElement(event.outcome)),
        el("td", { class: "ip mono" }, shown(event, "ip_address")),
        el("td", { class: "more" }, toggle),
      );
      rows.push(row, detailRow);
    });
    tbody.replaceChildren(...rows);
  }

  function text(value) {
    return value === null || value === undefined ? "" : String(value);
  }

  // Erased personal values (docs/privacy.md): null in the event, their JSON Pointers in
  // event.erased. Shown as a marker, never as an empty cell.
  const ERASED = "[erased]";
  function isErased(event, pointer) {
    return Array.isArray(event.erased) && event.erased.includes(pointer);
  }

  function erasedMark() {
    return el("span", { class: "muted erased", title: "Erased: this personal value was removed" }, ERASED);
  }

  /** A top-level field as text, or the erased marker. */
  function shown(event, name) {
    return isErased(event, `/${name}`) && !event[name] ? erasedMark() : text(event[name]);
  }

  /** The event's details with "[erased]" at each erased member. */
  function markedDetails(event) {
    const details = event.details;
    const pointers = (Array.isArray(event.erased) ? event.erased : []).filter((p) =>
      p.startsWith("/details/"),
    );
    if (!pointers.length || details === null || typeof details !== "object") return details;
    const copy = JSON.parse(JSON.stringify(details));
    for (const pointer of pointers) {
      const tokens = pointer
        .split("/")
        .slice(2)
        .map((token) => token.replace(/~1/g, "/").replace(/~0/g, "~"));
      let target = copy;
      for (const token of tokens.slice(0, -1)) {
        target = target === null || typeof target !== "object" ? undefined : target[token];
      }
      if (target !== null && typeof target === "object") target[tokens[tokens.length - 1]] = ERASED;
    }
    return copy;
  }

  function parseTime(timestamp) {
    // Trim microseconds to milliseconds: not every engine parses six fractional digits.
    const date = new Date(text(timestamp).replace(/(\.\d{3})\d+/, "$1"));
    return Number.isNaN(date.getTime()) ? null : date;
  }

  const pad = (number, width = 2) => String(number).padStart(width, "0");

  /** "2026-12-07 18:22:05.123 +01:00": the viewer's local time and its UTC offset then. */
  function localTime(date) {
    const offset = -date.getTimezoneOffset(); // minutes east of UTC, on that date
    const hours = Math.floor(Math.abs(offset) / 60);
    const minutes = Math.abs(offset) % 60;
    return (
      `${pad(date.getFullYear(), 4)}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.` +
      `${pad(date.getMilliseconds(), 3)} ${offset < 0 ? "-" : "+"}${pad(hours)}:${pad(minutes)}`
    );
  }

  /** "2026-12-07 17:22:05.123456 UTC": a log timestamp exactly, for tooltips. */
  function utcText(timestamp) {
    return `${text(timestamp).replace("T", " ").replace(/Z$/, "")} UTC`;
  }

  /** A <time> (or any element) showing ``timestamp`` locally, exactly in UTC on hover. */
  function showTime(node, timestamp) {
    const date = parseTime(timestamp);
    node.setAttribute("datetime", text(timestamp));
    node.title = utcText(timestamp);
    node.textContent = date ? localTime(date) : text(timestamp);
    return node;
  }

  function timeElement(timestamp) {
    return showTime(el("time"), timestamp);
  }

  function userElement(event) {
    if (!event.user_email && isErased(event, "/user_email")) {
      const node = el("span", {}, text(event.user_id));
      node.append(event.user_id ? " " : "", erasedMark());
      return node;
    }
    if (event.user_email) {
      const node = el("span", {}, text(event.user_email));
      if (event.user_id) node.title = `User ID: ${event.user_id}`;
      return node;
    }
    if (event.user_id) return el("span", {}, text(event.user_id));
    return el("span", { class: "muted" }, "System");
  }

  function resourceParts(event) {
    const parts = [el("span", {}, text(event.resource))];
    if (event.resource_id) {
      const id = text(event.resource_id);
      const short = el("span", { class: "muted resource-id", title: id }, ` #${id.slice(0, 8)}`);
      parts.push(short);
    }
    return parts;
  }

  function outcomeElement(outcome) {
    const value = text(outcome);
    const known = OUTCOMES.includes(value) ? value : "other";
    return el("span", { class: `pill pill-${known}` }, value);
  }

  function detailCell(event) {
    const details = el("pre", { class: "json", tabindex: "0" });
    details.textContent =
      event.details === null || event.details === undefined
        ? "No details"
        : JSON.stringify(markedDetails(event), null, 2);
    const facts = el("dl", { class: "facts" });
    const add = (label, value, mono = false) => {
      if (value === null || value === undefined || value === "") return;
      const shown = value instanceof Node ? value : text(value);
      facts.append(el("dt", {}, label), el("dd", mono ? { class: "mono" } : {}, shown));
    };
    add("Time", timeElement(event.timestamp), true);
    add("UTC", utcText(event.timestamp), true);
    add("User ID", event.user_id);
    add("User email", shown(event, "user_email"));
    add("Resource ID", event.resource_id, true);
    add("IP address", shown(event, "ip_address"), true);
    add("User agent", shown(event, "user_agent"));
    add("Request ID", event.request_id, true);
    add("Event ID", event.id, true);
    add("Log / seq", `${text(event.log)} / ${text(event.seq)}`, true);
    add("Hash", event.hash, true);
    add("Previous hash", event.prev_hash, true);

    const raw = el("a", { href: new URL(`events/${encodeURIComponent(text(event.id))}`, ROOT).href });
    raw.textContent = "Event as JSON";
    const cell = el(
      "td",
      { colspan: "7" },
      el(
        "div",
        { class: "detail" },
        el("section", { class: "detail-json" }, el("h2", {}, "Details"), details),
        el("section", { class: "detail-facts" }, el("h2", {}, "Event"), facts, el("p", {}, raw)),
      ),
    );
    return cell;
  }

  /** A new element; ``children`` are nodes or strings (strings become text nodes). */
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    node.append(...children);
    return node;
  }

  // --- the filter panel -----------------------------------------------------------------

  function updateFilterCount() {
    const f = view.filters;
    const active = ["search", "action", "resource", "resource_id", "user", "outcome", "from", "to"]
      .filter((name) => f[name]).length;
    filterCount.textContent = active ? `· ${active} active` : "";
  }

  // --- activity over time: the histogram ------------------------------------------------------

  const SVG_NS = "http://www.w3.org/2000/svg";
  const PX_PER_BAR = 8; // how many bars to ask for: about one per 8 pixels of width
  const MIN_BARS = 12;
  const MAX_BARS = 120;
  const UNITS = [
    [86_400_000, "day"],
    [3_600_000, "hour"],
    [60_000, "minute"],
    [1_000, "second"],
    [1, "millisecond"],
  ];
  const chart = $("chart");
  const bars = $("bars");
  const activitySummary = $("activity-summary");
  const readout = $("chart-readout");
  const chartStart = $("chart-start");
  const chartEnd = $("chart-end");

  let histogram = null; // the last GET histogram answer shown
  let histogramQuery = null; // the filters it was asked for
  let histogramController = null;
  let histogramLoads = 0;
  let selection = null; // {anchor, focus, pointer}: bars being chosen (pointer null: keys)
  let selectionRect = null;

  function barsWanted() {
    const width = chart.clientWidth || 600;
    return Math.max(MIN_BARS, Math.min(MAX_BARS, Math.floor(width / PX_PER_BAR)));
  }

  async function loadHistogram() {
    if (histogramController) histogramController.abort();
    const controller = new AbortController();
    histogramController = controller;
    const filters = apiFilters(view.filters);
    histogramQuery = filters.toString();
    const query = new URLSearchParams(filters);
    query.set("buckets", String(barsWanted()));
    chart.dataset.state = "loading";
    chart.setAttribute("aria-busy", "true");
    try {
      const body = await getJson("histogram", query, controller.signal);
      if (controller !== histogramController) return;
      histogram = checkedHistogram(body);
      drawHistogram();
      chart.dataset.state = histogram.total > 0 ? "ready" : "empty";
    } catch (error) {
      if (error.name === "AbortError" || controller !== histogramController) return;
      histogram = null;
      histogramQuery = null; // try again with the next view
      drawHistogram();
      chart.dataset.state = "error";
      activitySummary.textContent = "";
      readout.textContent = `Could not load the activity: ${error.message}`;
    } finally {
      if (controller === histogramController) {
        histogramController = null;
        chart.setAttribute("aria-busy", "false");
        histogramLoads += 1;
        chart.dataset.loads = String(histogramLoads);
      }
    }
  }

  /** The API's answer, with anything malformed left out. */
  function checkedHistogram(body) {
    const buckets = (Array.isArray(body.buckets) ? body.buckets : []).filter(
      (b) =>
        b &&
        typeof b.start === "string" &&
        typeof b.end === "string" &&
        Number.isInteger(b.count) &&
        b.count >= 0,
    );
    return {
      from: typeof body.from === "string" ? body.from : null,
      to: typeof body.to === "string" ? body.to : null,
      bucketMs: Number.isInteger(body.bucket_ms) ? body.bucket_ms : null,
      total: buckets.reduce((sum, b) => sum + b.count, 0),
      buckets,
    };
  }

  function svg(tag, attributes = {}, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    node.append(...children);
    return node;
  }

  function eventCount(count) {
    return `${numberFormat.format(count)} event${count === 1 ? "" : "s"}`;
  }

  function widthText(ms) {
    for (const [size, unit] of UNITS) {
      if (ms % size === 0) {
        const count = ms / size;
        return `${numberFormat.format(count)} ${unit}${count === 1 ? "" : "s"}`;
      }
    }
    return `${ms} ms`;
  }

  function localText(timestamp) {
    const date = parseTime(timestamp);
    return date ? localTime(date) : text(timestamp);
  }

  function rangeText(start, end) {
    return `${localText(start)} – ${localText(end)}`;
  }

  /** Bars of height proportional to their count (at least a sliver when not zero), in a
   *  viewBox one unit wide per bar, stretched to the chart's width. */
  function drawHistogram() {
    const buckets = histogram ? histogram.buckets : [];
    const highest = buckets.reduce((max, b) => Math.max(max, b.count), 0);
    const gap = buckets.length <= 60 ? 0.16 : buckets.length <= 150 ? 0.08 : 0;
    bars.setAttribute("viewBox", `0 0 ${Math.max(buckets.length, 1)} 100`);
    const rects = buckets.map((bucket, index) => {
      const height = bucket.count === 0 ? 0 : Math.max(1.5, (bucket.count / highest) * 100);
      const rect = svg("rect", {
        class: "bar",
        x: index + gap / 2,
        y: 100 - height,
        width: 1 - gap,
        height,
        "data-index": index,
        "data-count": bucket.count,
        "data-start": bucket.start,
        "data-end": bucket.end,
      });
      rect.append(
        svg(
          "title",
          {},
          `${rangeText(bucket.start, bucket.end)}: ${eventCount(bucket.count)}\n` +
            `${utcText(bucket.start)} – ${utcText(bucket.end)}`,
        ),
      );
      return rect;
    });
    selectionRect = svg("rect", { class: "selection", x: 0, y: 0, width: 0, height: 100 });
    bars.replaceChildren(...rects, selectionRect);
    selection = null;

    if (!histogram || buckets.length === 0) {
      for (const edge of [chartStart, chartEnd]) {
        edge.textContent = "";
        edge.removeAttribute("datetime");
        edge.removeAttribute("title");
      }
      bars.setAttribute("aria-label", histogram ? "No events match these filters." : "No activity to show.");
      if (histogram) {
        activitySummary.textContent = "No events";
        readout.textContent = "";
      }
      return;
    }
    showTime(chartStart, histogram.from || buckets[0].start);
    showTime(chartEnd, histogram.to || buckets[buckets.length - 1].end);
    const per = histogram.bucketMs ? ` · ${widthText(histogram.bucketMs)} per bar` : "";
    activitySummary.textContent = `${eventCount(histogram.total)}${per}`;
    bars.setAttribute(
      "aria-label",
      `Activity: ${eventCount(histogram.total)} from ${chartStart.textContent} to ` +
        `${chartEnd.textContent}, in ${buckets.length} bars${per ? ` of ${widthText(histogram.bucketMs)}` : ""}; ` +
        `the busiest has ${eventCount(highest)}.`,
    );
    showHint();
  }

  function showHint() {
    readout.textContent =
      "Drag across the bars to show only their events (or focus the chart: ← → to move, " +
      "Shift to widen, Enter to apply).";
  }

  function barAt(clientX) {
    const box = bars.getBoundingClientRect();
    const count = histogram.buckets.length;
    const index = Math.floor(((clientX - box.left) / box.width) * count);
    return Math.min(count - 1, Math.max(0, index));
  }

  function chosenBars() {
    return [Math.min(selection.anchor, selection.focus), Math.max(selection.anchor, selection.focus)];
  }

  function showSelection() {
    if (!selection) {
      selectionRect.setAttribute("width", "0");
      chart.classList.remove("choosing");
      showHint();
      return;
    }
    const [first, last] = chosenBars();
    selectionRect.setAttribute("x", String(first));
    selectionRect.setAttribute("width", String(last - first + 1));
    chart.classList.add("choosing");
    const chosen = histogram.buckets.slice(first, last + 1);
    const count = chosen.reduce((sum, b) => sum + b.count, 0);
    const how = selection.pointer === null ? "press Enter to show them" : "release to show them";
    readout.textContent =
      `${rangeText(chosen[0].start, chosen[chosen.length - 1].end)}: ` +
      `${eventCount(count)} (${how})`;
  }

  function showBar(index) {
    const bucket = histogram.buckets[index];
    readout.textContent = `${rangeText(bucket.start, bucket.end)}: ${eventCount(bucket.count)}`;
  }

  /** Narrow the time filter to the chosen bars: from the first one's start until the last
   *  one's end, exactly as the API gave them. */
  function applySelection() {
    const [first, last] = chosenBars();
    const from = histogram.buckets[first].start;
    const to = histogram.buckets[last].end;
    selection = null;
    showSelection();
    const filters = { ...view.filters, from, to };
    fillForm(filters);
    go({ filters, cursor: null, stack: [] });
  }

  const canChoose = () => histogram !== null && histogram.total > 0;

  chart.addEventListener("pointerdown", (event) => {
    if (!canChoose() || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault(); // no text selection while dragging
    chart.setPointerCapture(event.pointerId);
    const index = barAt(event.clientX);
    selection = { anchor: index, focus: index, pointer: event.pointerId };
    showSelection();
  });
  chart.addEventListener("pointermove", (event) => {
    if (!canChoose()) return;
    if (selection && selection.pointer === event.pointerId) {
      selection.focus = barAt(event.clientX);
      showSelection();
    } else if (!selection && event.pointerType === "mouse") {
      showBar(barAt(event.clientX));
    }
  });
  chart.addEventListener("pointerup", (event) => {
    if (!selection || selection.pointer !== event.pointerId) return;
    selection.focus = barAt(event.clientX);
    applySelection();
  });
  chart.addEventListener("pointercancel", () => {
    selection = null; // e.g. the page scrolled instead (a vertical swipe)
    showSelection();
  });
  chart.addEventListener("pointerleave", () => {
    if (!selection && canChoose()) showHint();
  });
  chart.addEventListener("keydown", (event) => {
    if (!canChoose()) return;
    const count = histogram.buckets.length;
    const moves = { ArrowLeft: -1, ArrowRight: 1, Home: -count, End: count };
    if (event.key in moves) {
      event.preventDefault();
      const from = selection ? selection.focus : event.key === "ArrowLeft" ? count : -1;
      const focus = Math.min(count - 1, Math.max(0, from + moves[event.key]));
      const anchor = event.shiftKey && selection ? selection.anchor : focus;
      selection = { anchor, focus, pointer: null };
      showSelection();
    } else if (event.key === "Enter" && selection) {
      event.preventDefault();
      applySelection();
    } else if (event.key === "Escape" && selection) {
      selection = null;
      showSelection();
    }
  });
  chart.addEventListener("blur", () => {
    if (selection && selection.pointer === null) {
      selection = null;
      showSelection();
    }
  });
  clearRange.addEventListener("click", () => {
    const filters = { ...view.filters, from: "", to: "" };
    fillForm(filters);
    go({ filters, cursor: null, stack: [] });
  });

  // --- facets and chain status ------------------------------------------------------------

  async function loadFacets() {
    let body;
    try {
      body = await getJson("facets");
    } catch {
      return; // the filters still work as free text
    }
    const list = (name) =>
      Array.isArray(body[name]) ? body[name].filter((v) => typeof v === "string") : [];
    const resources = list("resources");
    const selected = inputs.resource.value;
    inputs.resource.replaceChildren(new Option("All resources", ""));
    for (const resource of resources) inputs.resource.append(new Option(resource, resource));
    ensureOption(inputs.resource, selected);
    inputs.resource.value = selected;

    const actions = list("actions");
    const prefixes = new Set();
    for (const action of actions) {
      const dot = action.indexOf(".");
      if (dot > 0) prefixes.add(`${action.slice(0, dot)}.*`);
    }
    const datalist = $("action-options");
    datalist.replaceChildren(
      ...[...prefixes].sort().map((prefix) => new Option(`all ${prefix}`, prefix)),
      ...actions.map((action) => new Option("", action)),
    );
  }

  /** The chain badge, from GET verify. Verifying reads the whole log, so a page load takes
   *  a result up to 5 minutes old (the badge's tooltip says when it was checked); "Verify
   *  again" always verifies now. Filter changes never verify. */
  async function loadChainStatus(fresh = false) {
    reverify.hidden = true;
    setBadge("checking", "Verifying chain…", "Checking every entry of the hash chain");
    let report;
    try {
      report = await getJson(fresh ? "verify" : `verify?max_age=${CHAIN_RESULT_MAX_AGE}`);
    } catch (error) {
      setBadge("error", "Chain check failed", error.message);
      return;
    } finally {
      reverify.hidden = false;
    }
    const checkedAt = new Date(typeof report.checked_at === "string" ? report.checked_at : NaN);
    const checked = `checked ${clockFormat.format(isNaN(checkedAt) ? new Date() : checkedAt)}`;
    const entries = typeof report.entries === "number" ? numberFormat.format(report.entries) : "";
    const warnings = Array.isArray(report.warnings) ? report.warnings.map(text) : [];
    if (report.ok === true) {
      const label = entries ? `Chain intact · ${entries} events` : "Chain intact";
      if (warnings.length > 0) {
        setBadge("warning", `${label} · ${warnings.length} warning(s)`, warnings.join("\n"));
      } else {
        setBadge("ok", label, `Every entry's hash and link verified (${checked})`);
      }
      return;
    }
    const findings = Array.isArray(report.findings) ? report.findings : [];
    const first = findings[0];
    const total = typeof report.total_findings === "number" ? report.total_findings : findings.length;
    const more = `${numberFormat.format(total)} finding(s), ${checked}`;
    if (first && typeof first === "object" && first.log === null) {
      // Damage of the store as a whole (e.g. storage_damaged): no log, no seq.
      setBadge("damaged", `Store damaged · ${text(first.kind)}`, `${text(first.message)} (${more})`);
    } else if (first && typeof first === "object") {
      const where = `log ${text(first.log)} seq ${text(first.seq)}: ${text(first.kind)}`;
      setBadge("damaged", `Chain damaged · ${where}`, `${text(first.message)} (${more})`);
    } else {
      setBadge("damaged", "Chain damaged", more);
    }
  }

  function setBadge(state, label, title) {
    chainBadge.dataset.state = state;
    chainBadge.textContent = label;
    chainBadge.title = title;
  }

  /** The streams badge, from GET streams: hidden while the store has no log stream; else
   *  a stream that stopped (its destination refused events), one that is retrying, how far
   *  behind the furthest one is, or that all are up to date. The tooltip lists each. */
  async function loadStreamStatus() {
    let body;
    try {
      body = await getJson("streams");
    } catch (error) {
      return; // the chain badge and the table report an unavailable store already
    }
    const streams = Array.isArray(body.streams) ? body.streams : [];
    if (streams.length === 0) return;
    const behind = (stream) =>
      (Array.isArray(stream.logs) ? stream.logs : []).reduce(
        (sum, log) => sum + (typeof log.lag_events === "number" ? log.lag_events : 0),
        0,
      );
    const error = (stream) => (typeof stream.last_error === "string" ? stream.last_error : "");
    const title = streams
      .map((stream) => {
        const failing = error(stream) ? ` (${text(error(stream))})` : "";
        return `${text(stream.name)}: ${numberFormat.format(behind(stream))} events behind${failing}`;
      })
      .join("\n");
    const stopped = streams.find((stream) => error(stream).startsWith("refused"));
    const retrying = streams.find((stream) => error(stream) !== "");
    const most = Math.max(...streams.map(behind));
    let state = "ok";
    let label = "Streams up to date";
    if (stopped) {
      [state, label] = ["damaged", `Stream ${text(stopped.name)} stopped`];
    } else if (retrying) {
      [state, label] = ["warning", `Stream ${text(retrying.name)} retrying`];
    } else if (most > 0) {
      [state, label] = ["lag", `Streams · ${numberFormat.format(most)} events behind`];
    }
    streamsBadge.dataset.state = state;
    streamsBadge.textContent = label;
    streamsBadge.title = title;
    streamsBadge.hidden = false;
  }

  // --- start -----------------------------------------------------------------------------

  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  $("tz-note").textContent =
    `Times are in your time zone${zone ? ` (${zone})` : ""}, with their offset from UTC; ` +
    "point at one to see it in UTC. From and Until are your local times.";
  // On a phone the filters start folded, so that the first screen shows events.
  if (window.matchMedia(NARROW_SCREEN).matches) filterPanel.open = false;

  view = viewFromUrl();
  fillForm(view.filters);
  go(view, { replace: true }); // canonical URL (invalid parameters dropped), then load
  loadFacets();
  loadChainStatus();
  loadStreamStatus();
})();
