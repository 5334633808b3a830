// Goes through Keyfob's own login and consent pages with plain HTTP (cookies kept, redirects
// followed by hand), the way a browser would, and answers the address Keyfob sends the user back
// to.

function decode(value) {
  return value
    .replace(/&#x([0-9a-f]+);/gi, (_, hex) => String.fromCodePoint(parseInt(hex, 16)))
    .replace(/&#([0-9]+);/g, (_, dec) => String.fromCodePoint(Number(dec)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&amp;/g, "&");
}

/** The named inputs of the form whose action is `action`. */
function formFields(html, action) {
  const start = html.indexOf(`action="${action}"`);
  if (start < 0) throw new Error(`no form for ${action} in:\n${html}`);
  const form = html.slice(start, html.indexOf("</form>", start));
  const fields = [];
  for (const match of form.matchAll(/<input([^>]*)>/g)) {
    const attributes = match[1];
    const name = /name="([^"]*)"/.exec(attributes)?.[1];
    const value = /value="([^"]*)"/.exec(attributes)?.[1] ?? "";
    const type = /type="([^"]*)"/.exec(attributes)?.[1] ?? "text";
    if (!name) continue;
    if (type === "checkbox" && !/\schecked/.test(attributes)) continue;
    fields.push([name, decode(value)]);
  }
  return fields;
}

/**
 * Starts at `loginUrl` (`GET /auth?…`), logs in as `email`, allows everything asked, and answers
 * the redirect to the application (with `?code=…` or `#token=…`).
 */
export async function authorize(loginUrl, { email, password, decision = "allow" }) {
  const keyfob = new URL(loginUrl).origin;
  const cookies = new Map();
  async function go(url, init = {}) {
    const headers = new Headers(init.headers);
    if (cookies.size) headers.set("Cookie", [...cookies].map(([k, v]) => `${k}=${v}`).join("; "));
    const response = await fetch(url, { ...init, headers, redirect: "manual" });
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(";");
      const at = pair.indexOf("=");
      cookies.set(pair.slice(0, at).trim(), pair.slice(at + 1).trim());
    }
    return response;
  }
  function post(path, fields) {
    return go(`${keyfob}${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(fields),
    });
  }

  let response = await go(loginUrl);
  for (let step = 0; step < 12; step += 1) {
    if (response.status >= 300 && response.status < 400) {
      const next = new URL(response.headers.get("location"), keyfob);
      if (next.origin !== keyfob) return next.href;
      response = await go(next.href);
      continue;
    }
    const html = await response.text();
    if (response.status !== 200) throw new Error(`Keyfob answered ${response.status}:\n${html}`);
    if (html.includes('action="/auth/login"')) {
      const fields = formFields(html, "/auth/login").filter(([name]) => name !== "email" && name !== "password");
      response = await post("/auth/login", [...fields, ["email", email], ["password", password]]);
    } else if (html.includes('action="/auth/consent"')) {
      const fields = formFields(html, "/auth/consent");
      response = await post("/auth/consent", [...fields, ["decision", decision]]);
    } else {
      throw new Error(`an unexpected page:\n${html}`);
    }
  }
  throw new Error("too many steps on Keyfob's pages");
}
