"""The home page: a sign-in form, links, and how to call the API. No external assets."""

from __future__ import annotations

from html import escape

ADMIN_PATH = "/admin/audit"

_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 44rem; margin: 2rem auto;
       padding: 0 1rem; color: #1f2328; }
form { display: grid; gap: .5rem; max-width: 20rem; }
input, button { font: inherit; padding: .35rem .5rem; }
pre { background: #f6f8fa; padding: .75rem; overflow-x: auto; font-size: 14px; }
.error { color: #b42318; }
"""

_API = """curl -u member@example.com:member -X POST localhost:8000/projects \\
     -H 'content-type: application/json' -d '{"name": "Apollo", "description": "moon"}'
curl -u member@example.com:member -X PATCH localhost:8000/projects/1 \\
     -H 'content-type: application/json' -d '{"name": "Artemis"}'
curl -u admin@example.com:admin -X PUT localhost:8000/users/member@example.com/role \\
     -H 'content-type: application/json' -d '{"role": "admin"}'"""


def home_page(
    email: str | None, role: str | None, error: str | None = None, next_path: str | None = None
) -> str:
    """The page; signed out, a sign-in form that returns to ``next_path`` (a checked local
    path: ``auth.return_path``) afterwards."""
    if email is None:
        message = f'<p class="error">{escape(error)}</p>' if error else ""
        back = ""
        if next_path:
            back = f'\n  <input type="hidden" name="next" value="{escape(next_path)}">'
        account = f"""{message}
<form method="post" action="/auth/sign-in">{back}
  <label>Email <input name="email" type="email" value="admin@example.com" required></label>
  <label>Password <input name="password" type="password" required></label>
  <button type="submit">Sign in</button>
</form>
<p>Demo users: <code>admin@example.com</code> / <code>admin</code> and
<code>member@example.com</code> / <code>member</code>.</p>"""
    else:
        account = f"""<p>Signed in as <strong>{escape(email)}</strong> ({escape(role or "")}).</p>
<form method="post" action="/auth/sign-out"><button type="submit">Sign out</button></form>"""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>auditmw example</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>auditmw example app</h1>
{account}
<h2>Audit log</h2>
<p><a href="{ADMIN_PATH}/">Open the audit dashboard</a> (admins only): who did what, when,
from where, and a check that the hash chain is intact.</p>
<h2>API</h2>
<pre>{escape(_API)}</pre>
</body>
</html>
"""
