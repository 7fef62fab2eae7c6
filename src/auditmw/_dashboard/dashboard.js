// auditmw dashboard: a small client of the admin app's JSON API.
//
// Rules kept throughout:
// - Every value read from the log is written with textContent / DOM APIs, never parsed as
//   HTML, so an event holding "<script>" or "<img onerror>" shows as text and runs nothing.
// - URLs are relative to the mount point (the directory above this script), so the app
//   works mounted at any path.
// - The page's query string holds the filters and the page cursor: a view can be shared,
//   reloading restores it, and back/forward walk through earlier views.
"use strict";

(() => {
  const scriptUrl = document.currentScript ? document.currentScript.src : document.baseURI;
  const ROOT = new URL("../", scriptUrl); // ".../static/dashboard.js" -> mount point

  const DATE_RE = /^\d{4}-\d{2}-\d{2}$/;
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
  const reverify = $("reverify");
  const pager = {
    nav: $("pager"),
    first: $("first"),
    prev: $("prev"),
    next: $("next"),
    label: $("page-label"),
  };
  const exportLinks = { csv: $("export-csv"), jsonl: $("export-jsonl") };

  const timeFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric",
    month: "short",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
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
    filters.from = DATE_RE.test(get("from")) ? get("from") : "";
    filters.to = DATE_RE.test(get("to")) ? get("to") : "";
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

  /** The API's filter parameters for a view (shared by the table and the exports).
   *  Dates are the viewer's local days, sent as exact UTC instants. */
  function apiFilters(f) {
    const query = new URLSearchParams();
    for (const name of ["search", "action", "resource", "resource_id", "outcome"]) {
      if (f[name]) query.set(name, f[name]);
    }
    if (f.user) query.set(userParam(f), f.user);
    if (f.from) query.set("from", localDayStart(f.from));
    if (f.to) query.set("to", localDayEnd(f.to));
    return query;
  }

  function localDay(value, offsetDays) {
    const [year, month, day] = value.split("-").map(Number);
    return new Date(year, month - 1, day + offsetDays); // local midnight
  }

  function localDayStart(value) {
    return localDay(value, 0).toISOString();
  }

  function localDayEnd(value) {
    return localDay(value, 1).toISOString(); // the API's "to" is exclusive
  }

  function filtersFromForm() {
    const f = emptyFilters();
    for (const name of TEXT_FIELDS) f[name] = inputs[name].value.trim();
    f.resource = inputs.resource.value;
    f.outcome = inputs.outcome.value;
    f.from = DATE_RE.test(inputs.from.value) ? inputs.from.value : "";
    f.to = DATE_RE.test(inputs.to.value) ? inputs.to.value : "";
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
    inputs.from.value = f.from;
    inputs.to.value = f.to;
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
    updateExportLinks();
    loadEvents();
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
  $("refresh").addEventListener("click", loadEvents);
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
    updateExportLinks();
    loadEvents();
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
        el("td", { class: "ip mono" }, text(event.ip_address)),
        el("td", { class: "more" }, toggle),
      );
      rows.push(row, detailRow);
    });
    tbody.replaceChildren(...rows);
  }

  function text(value) {
    return value === null || value === undefined ? "" : String(value);
  }

  function parseTime(timestamp) {
    // Trim microseconds to milliseconds: not every engine parses six fractional digits.
    const date = new Date(text(timestamp).replace(/(\.\d{3})\d+/, "$1"));
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function timeElement(timestamp) {
    const date = parseTime(timestamp);
    const node = el("time", { datetime: text(timestamp), title: `${text(timestamp)} (UTC)` });
    node.textContent = date ? timeFormat.format(date) : text(timestamp);
    return node;
  }

  function userElement(event) {
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
        : JSON.stringify(event.details, null, 2);
    const facts = el("dl", { class: "facts" });
    const add = (label, value, mono = false) => {
      if (value === null || value === undefined || value === "") return;
      facts.append(el("dt", {}, label), el("dd", mono ? { class: "mono" } : {}, text(value)));
    };
    add("Time (UTC)", event.timestamp, true);
    add("User ID", event.user_id);
    add("User email", event.user_email);
    add("Resource ID", event.resource_id, true);
    add("IP address", event.ip_address, true);
    add("User agent", event.user_agent);
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
    if (first && typeof first === "object") {
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

  // --- start -----------------------------------------------------------------------------

  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  $("tz-note").textContent = `Times are shown in your local time zone${zone ? ` (${zone})` : ""}; dates in the filters are local days.`;

  view = viewFromUrl();
  fillForm(view.filters);
  go(view, { replace: true }); // canonical URL (invalid parameters dropped), then load
  loadFacets();
  loadChainStatus();
})();
