// Supervisor reports: /api/v1/reports/summary drawn as inline SVG charts (no chart library, no CDN).
"use strict";

const { api, el, when, showRef, describeError } = Atiende;
const SVG = "http://www.w3.org/2000/svg";
const COLORS = { phone: "#0b5cad", webchat: "#2e9d5b", email: "#a15c00", whatsapp: "#25a18e", telegram: "#6f42c1", office: "#8a8f98", api: "#c2c7cf" };
const NAMES = { phone: "Teléfono", webchat: "Chat web", email: "Correo", whatsapp: "WhatsApp", telegram: "Telegram", office: "Oficina", api: "API" };

function svg(tag, attrs = {}, ...children) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  for (const c of children) n.append(c.nodeType ? c : document.createTextNode(String(c)));
  return n;
}

// role=img with a label: screen readers announce what the chart shows (the figures are also in the tables).
function chart(w, h, label) { return svg("svg", { viewBox: `0 0 ${w} ${h}`, class: "chart", role: "img", "aria-label": label }); }

function legend(channels) {
  return el("div", { class: "row small" }, channels.map((c) => el("span", {},
    el("span", { style: `display:inline-block;width:.8rem;height:.8rem;background:${COLORS[c] || "#999"};border-radius:2px;margin-right:.25rem` }), NAMES[c] || c)));
}

function stackedBars(days, channels) {
  const W = 560, H = 240, L = 34, B = 26, T = 8;
  const totals = days.map((d) => channels.reduce((s, c) => s + ((d.interactions || {})[c] || 0), 0));
  const max = Math.max(1, ...totals);
  const g = chart(W, H, `Contactos por canal y día, ${days.length} días; máximo ${max} en un día`);
  const bw = (W - L - 8) / Math.max(1, days.length);
  for (const frac of [0, 0.5, 1]) {
    const y = T + (H - T - B) * (1 - frac);
    g.append(svg("line", { x1: L, x2: W, y1: y, y2: y, stroke: "#dde3ea" }), svg("text", { x: L - 4, y: y + 4, "text-anchor": "end", "font-size": 10, fill: "#5d6b7a" }, Math.round(max * frac)));
  }
  days.forEach((d, i) => {
    let y = H - B;
    for (const c of channels) {
      const v = (d.interactions || {})[c] || 0;
      if (!v) continue;
      const hh = (H - T - B) * v / max;
      y -= hh;
      g.append(svg("rect", { x: L + i * bw + 2, y, width: Math.max(1, bw - 4), height: hh, fill: COLORS[c] || "#999" }, svg("title", {}, `${d.day} · ${NAMES[c] || c}: ${v}`)));
    }
    if (days.length <= 16 || i % Math.ceil(days.length / 16) === 0)
      g.append(svg("text", { x: L + i * bw + bw / 2, y: H - 8, "text-anchor": "middle", "font-size": 10, fill: "#5d6b7a" }, d.day.slice(5)));
  });
  return el("div", {}, g, legend(channels));
}

function line(days) {
  const W = 560, H = 200, L = 38, B = 26, T = 10;
  const g = chart(W, H, `Contención por día, ${days.length} días`);
  for (const frac of [0, 0.5, 1]) {
    const y = T + (H - T - B) * (1 - frac);
    g.append(svg("line", { x1: L, x2: W, y1: y, y2: y, stroke: "#dde3ea" }), svg("text", { x: L - 4, y: y + 4, "text-anchor": "end", "font-size": 10, fill: "#5d6b7a" }, `${frac * 100} %`));
  }
  const step = (W - L - 12) / Math.max(1, days.length - 1);
  const pts = days.map((d, i) => [L + 6 + i * step, d.containment == null ? null : T + (H - T - B) * (1 - d.containment), d]);
  const drawn = pts.filter((p) => p[1] !== null);
  if (drawn.length > 1) g.append(svg("polyline", { points: drawn.map((p) => `${p[0]},${p[1]}`).join(" "), fill: "none", stroke: "#2e9d5b", "stroke-width": 2 }));
  for (const [x, y, d] of drawn) g.append(svg("circle", { cx: x, cy: y, r: 3.5, fill: "#2e9d5b" }, svg("title", {}, `${d.day}: ${Math.round(d.containment * 100)} %`)));
  pts.forEach(([x, , d], i) => { if (days.length <= 16 || i % Math.ceil(days.length / 16) === 0) g.append(svg("text", { x, y: H - 8, "text-anchor": "middle", "font-size": 10, fill: "#5d6b7a" }, d.day.slice(5))); });
  if (!drawn.length) g.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#5d6b7a" }, "Sin contactos en el periodo"));
  return g;
}

function histogram(waiting) {
  const chans = Object.keys(waiting);
  if (!chans.length) return el("p", { class: "muted" }, "Sin esperas registradas en el periodo.");
  const W = 560, H = 200, L = 30, B = 30, T = 8;
  const labels = Object.keys(waiting[chans[0]].histogram);
  const max = Math.max(1, ...chans.flatMap((c) => Object.values(waiting[c].histogram)));
  const g = chart(W, H, `Tiempos de espera por canal: ${chans.join(", ")}`);
  const gw = (W - L) / labels.length, bw = (gw - 6) / chans.length;
  labels.forEach((lab, i) => {
    chans.forEach((c, j) => {
      const v = waiting[c].histogram[lab] || 0, hh = (H - T - B) * v / max;
      g.append(svg("rect", { x: L + i * gw + 3 + j * bw, y: H - B - hh, width: Math.max(1, bw - 1), height: hh, fill: COLORS[c] || "#999" }, svg("title", {}, `${NAMES[c] || c} ${lab}: ${v}`)));
    });
    g.append(svg("text", { x: L + i * gw + gw / 2, y: H - 10, "text-anchor": "middle", "font-size": 10, fill: "#5d6b7a" }, lab));
  });
  return el("div", {}, g, legend(chans), el("p", { class: "small muted" }, chans.map((c) =>
    `${NAMES[c] || c}: ${waiting[c].count} esperas, media ${waiting[c].avg_s ?? "—"} s, abandonos ${waiting[c].abandoned}`).join(" · ")));
}

function pct(x) { return x == null ? "—" : `${Math.round(x * 1000) / 10} %`; }

async function load() {
  const err = document.getElementById("err");
  err.textContent = "";
  const start = document.getElementById("start").value, end = document.getElementById("end").value;
  let r;
  try { r = await api("GET", `/api/v1/reports/summary?start=${start}&end=${end}`); } catch (e) { err.textContent = describeError(e); return; }
  const channels = Object.keys(r.interactions_by_channel).filter((c) => r.interactions_by_channel[c] > 0);
  const totalInteractions = Object.values(r.interactions_by_channel).reduce((a, b) => a + b, 0);
  const created = r.days.reduce((s, d) => s + (d.tickets_created || 0), 0);
  const kpi = (label, value, id) => el("div", { class: "kpi", "data-testid": id }, el("span", { class: "small muted" }, label), el("b", {}, value));
  document.getElementById("kpis").replaceChildren(
    kpi("Interacciones", String(totalInteractions), "kpi-interactions"),
    kpi("Resueltas por el asistente", `${pct(r.containment.share)} (${r.containment.contained}/${r.containment.contacts})`, "kpi-containment"),
    kpi("Tickets creados", String(created), "kpi-tickets"),
    kpi("Llamadas abandonadas", `${pct(r.abandoned_calls.share)} (${r.abandoned_calls.abandoned}/${r.abandoned_calls.calls})`, "kpi-abandoned"),
    kpi("Abiertos fuera de plazo", String(r.open_past_due.count), "kpi-overdue"));
  try {
    const period = `since=${start}T00:00:00Z&until=${end}T23:59:59Z`;
    const sv = await api("GET", `/api/v1/calls/surveys?${period}`);
    const all = Object.values(sv);
    const answers = all.reduce((n, x) => n + x.answers, 0);
    const avg = answers ? all.reduce((t, x) => t + x.average * x.answers, 0) / answers : null;
    document.getElementById("kpis").append(kpi("Valoración de las llamadas (1-5)",
      avg == null ? "—" : `${avg.toFixed(1)} (${answers} respuestas)`, "kpi-survey"));
  } catch (e) { /* the survey is optional: no KPI when it cannot be read */ }
  document.getElementById("by-day").replaceChildren(channels.length ? stackedBars(r.days, channels) : el("p", { class: "muted" }, "Sin interacciones en el periodo."));
  document.getElementById("containment").replaceChildren(line(r.days),
    el("p", { class: "small muted" }, Object.entries(r.containment.by_channel || {}).map(([c, s]) => `${NAMES[c] || c}: ${pct(s)}`).join(" · ")));
  document.getElementById("waits").replaceChildren(histogram(r.waiting || {}));
  const overdue = r.open_past_due.refs || [];
  document.getElementById("overdue").replaceChildren(overdue.length
    ? el("ul", {}, overdue.map((ref) => el("li", {}, showRef(ref)))) : el("p", { class: "muted" }, "Ninguno."));
  await loadOperations(start, end);
  try {
    const a = await api("GET", "/api/v1/audit?count=30");
    document.getElementById("audit").replaceChildren(el("table", {}, el("thead", {}, el("tr", {}, ["Cuándo", "Quién", "Qué", "Sobre"].map((h) => el("th", {}, h)))),
      el("tbody", {}, a.entries.map((e) => el("tr", {}, el("td", {}, when(e.at)), el("td", {}, e.actor || ""), el("td", {}, e.action || ""), el("td", {}, e.target || ""))))));
  } catch (e) { document.getElementById("audit").textContent = describeError(e); }
}

// Operations (issue 18): tickets at risk of their SLA, dispositions in the period, the CDR export.
const SLA_NAMES = { first_response: "primera respuesta", resolution: "resolución" };

async function loadOperations(start, end) {
  document.getElementById("cdr-link").href = `/api/v1/cdr.csv?since=${start}&until=${end}`;
  const sla = document.getElementById("sla");
  try {
    const r = await api("GET", "/api/v1/sla/at-risk?limit=50");
    sla.replaceChildren(r.tickets.length ? el("table", {}, el("thead", {}, el("tr", {}, ["Ticket", "Cola", "Plazo", "Vence", "Usado"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, r.tickets.map((x) => el("tr", { "data-testid": `sla-row-${x.ref}`, class: x.level },
        el("td", {}, showRef(x.ref)), el("td", {}, x.queue), el("td", {}, SLA_NAMES[x.sla] || x.sla),
        el("td", {}, x.level === "breach" ? el("b", { class: "error" }, `vencido (${when(x.due)})`) : when(x.due)),
        el("td", {}, `${Math.round(x.used * 100)} %`))))) : el("p", { class: "muted" }, "Ninguno."));
  } catch (e) { sla.textContent = describeError(e); }
  const box = document.getElementById("dispositions");
  try {
    const r = await api("GET", `/api/v1/reports/dispositions?start=${start}&end=${end}`);
    const rows = Object.entries(r.codes).filter(([, v]) => v.tickets || v.calls || v.active);
    box.replaceChildren(el("table", {}, el("thead", {}, el("tr", {}, ["Tipificación", "Tickets", "Llamadas"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.map(([code, v]) => el("tr", { "data-testid": `disp-${code}` }, el("td", {}, v.label), el("td", {}, String(v.tickets)), el("td", {}, String(v.calls)))))));
  } catch (e) { box.textContent = describeError(e); }
}

async function init() {
  const user = await Atiende.requireLogin("supervisor");
  document.getElementById("top").replaceWith(Atiende.header("/reports", user));
  const now = await api("GET", "/healthz", undefined, { noRedirect: true }).catch(() => null);
  const today = new Date(now && now.time ? now.time : Date.now());
  const iso = (d) => d.toISOString().slice(0, 10);
  document.getElementById("end").value = iso(today);
  document.getElementById("start").value = iso(new Date(today.getTime() - 13 * 86400000));
  document.getElementById("go").addEventListener("click", load);
  await load();
}

init().catch((e) => { if (e.message !== "login" && e.message !== "forbidden") console.error(e); });
