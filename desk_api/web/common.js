// Shared by the Atiende pages: API calls with the session, the header, small DOM helpers. No framework, no build.
"use strict";

const Atiende = (() => {
  // The session lives in an HttpOnly cookie that the server sets at login: scripts never see the token, so an
  // injected script cannot steal it. Anything an older version left in this browser is wiped.
  try { localStorage.removeItem("atiende_token"); } catch (e) { /* storage disabled */ }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status; this.body = body || {};
      this.details = this.body.details;
    }
  }

  async function api(method, path, body, opts = {}) {
    const headers = { Accept: "application/json" };
    let payload;
    if (body !== undefined) {
      if (typeof body === "string") { headers["Content-Type"] = opts.type || "text/plain"; payload = body; }
      else { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
    }
    const resp = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { message: text }; }
    if (resp.status === 401 && !opts.noRedirect) { location.href = `/login?next=${encodeURIComponent(location.pathname)}`; }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c.nodeType ? c : String(c));
    return node;
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString("es-ES", { timeZone: "Europe/Madrid", day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit" });
  }

  function showRef(ref) { return ref && ref.length === 6 ? `${ref.slice(0, 3)}-${ref.slice(3)}` : ref || ""; }

  function describeError(err) {
    if (!(err instanceof ApiError)) return String(err);
    const d = err.details;
    if (Array.isArray(d) && d.length) return `${err.message}: ` + d.map((x) => (x.loc ? `${x.loc}: ` : "") + (x.reason || x.msg || "")).join("; ");
    return err.message;
  }

  let me = null;
  async function whoami() {
    if (me) return me;
    try { me = await api("GET", "/api/v1/auth/me", undefined, { noRedirect: true }); } catch (e) { me = null; }
    return me;
  }

  function roles(user) { return (user && (user.roles || (user.user && user.user.roles))) || []; }
  function has(user, ...wanted) { const r = roles(user); return r.includes("admin") || wanted.some((x) => r.includes(x)); }

  async function requireLogin(...wanted) {
    const user = await whoami();
    if (!user) { location.href = `/login?next=${encodeURIComponent(location.pathname)}`; throw new Error("login"); }
    if (wanted.length && !has(user, ...wanted)) {
      document.body.replaceChildren(el("main", {}, el("div", { class: "panel login" }, el("h2", {}, "Sin permiso"),
        el("p", {}, "Su usuario no tiene acceso a esta página."), el("a", { href: "/desk" }, "Volver al escritorio"))));
      throw new Error("forbidden");
    }
    return user;
  }

  function header(here, user) {
    const links = [["/desk", "Escritorio", ["agent_n1", "agent_n2", "supervisor"]], ["/reports", "Informes", ["supervisor"]],
      ["/admin", "Administración", ["admin"]], ["/chat", "Chat ciudadano", []]];
    const nav = el("nav", {}, links.filter(([, , r]) => !r.length || has(user, ...r))
      .map(([href, label]) => el("a", { href, class: href === here ? "here" : "" }, label)));
    const name = user ? (user.name || user.username || user.id) : "";
    const out = el("button", { class: "secondary", "data-testid": "logout", onclick: async () => {
      try { await api("POST", "/api/v1/auth/logout", {}, { noRedirect: true }); } catch (e) { /* already gone */ }
      location.href = "/login";
    } }, "Salir");
    const who = el("div", { class: "who" }, el("span", { "data-testid": "whoami" }, name), out);
    return el("header", { class: "top" }, el("h1", {}, "Atiende"), nav, who);
  }

  return { api, ApiError, el, when, showRef, describeError, whoami, requireLogin, header, has, roles };
})();
