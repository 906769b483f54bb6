// Admin pages: calendar, versions and drafts, queues and agents, citizens; the IVR editors (flows, prompts, intents,
// simulator, learning) are in admin-*.js and register themselves in `Admin.sections`. Everything goes through the
// APIs; YAML is parsed and printed by the server (/desk/api/yaml/*) so the page needs no library.
"use strict";

const { api, el, when, describeError } = Atiende;

const DAYS = [["mon", "lunes"], ["tue", "martes"], ["wed", "miércoles"], ["thu", "jueves"], ["fri", "viernes"], ["sat", "sábado"], ["sun", "domingo"]];
let user = null;

// Sections other scripts add (admin-flows.js, admin-prompts.js, admin-intents.js, admin-learning.js) register here.
const Admin = { sections: {}, user: null, isAdmin: false };
// Tabs a supervisor sees: they try changes and propose drafts; an admin publishes them.
const SUPERVISOR_TABS = new Set(["flows", "prompts", "intents", "simulator"]);

async function init() {
  user = await Atiende.requireLogin("admin", "supervisor");
  Admin.user = user;
  Admin.isAdmin = Atiende.roles(user).includes("admin");
  document.getElementById("top").replaceWith(Atiende.header("/admin", user));
  for (const b of document.querySelectorAll("#sections button")) {
    if (!Admin.isAdmin && !SUPERVISOR_TABS.has(b.dataset.section)) { b.remove(); continue; }
    b.addEventListener("click", () => show(b.dataset.section));
  }
  show(location.hash.slice(1) || (Admin.isAdmin ? "calendar" : "flows"));
}

function show(name) {
  const base = { calendar: calendarSection, people: peopleSection, citizens: citizensSection };
  const sections = { ...base, ...Admin.sections };
  if (!sections[name] || (!Admin.isAdmin && !SUPERVISOR_TABS.has(name))) name = Admin.isAdmin ? "calendar" : "flows";
  for (const b of document.querySelectorAll("#sections button")) {
    const on = b.dataset.section === name;
    b.classList.toggle("on", on);
    b.setAttribute("aria-pressed", on ? "true" : "false");
  }
  history.replaceState(null, "", `#${name}`);
  // A fresh box per visit: a section still loading when another tab is chosen fills its own, detached, box.
  const box = el("div");
  document.getElementById("section").replaceChildren(box);
  sections[name](box).catch((e) => box.append(el("p", { class: "error" }, describeError(e))));
}
Admin.show = (name) => show(name);

// ---- a versioned section edited as YAML ------------------------------------------------------------------

function issuesList(err) {
  const d = err && err.details;
  const items = Array.isArray(d) ? d : d && typeof d === "object" ? Object.entries(d).map(([loc, reason]) => ({ loc, reason })) : [];
  return el("div", {}, el("p", { class: "error" }, err.message || String(err)),
    items.length ? el("ul", { class: "issues", "data-testid": "yaml-issues" }, items.map((x) =>
      el("li", {}, x.loc ? el("code", {}, x.loc) : null, x.loc ? ": " : "", x.reason || x.msg || JSON.stringify(x)))) : null);
}

async function toYaml(value) { return (await api("POST", "/desk/api/yaml/dump", value)).yaml; }
async function fromYaml(text) { return api("POST", "/desk/api/yaml/parse", text, { type: "application/yaml" }); }

function yamlEditor(spec) {
  const area = el("textarea", { class: "code", spellcheck: "false", "data-testid": `yaml-${spec.id}`, "aria-label": spec.title || spec.id });
  const syntax = el("span", { class: "small", "data-testid": `yaml-syntax-${spec.id}` });
  const result = el("div", { "data-testid": `yaml-result-${spec.id}`, role: "status" });
  const note = el("input", { placeholder: "Nota del cambio (opcional)", style: "flex:1" });
  const versions = el("tbody");
  let timer = null;

  area.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try { await fromYaml(area.value); syntax.className = "small ok"; syntax.textContent = "YAML correcto"; }
      catch (e) { syntax.className = "small error"; syntax.textContent = describeError(e); }
    }, 500);
  });

  async function load() {
    area.value = await toYaml(await spec.load());
    syntax.textContent = "";
    await loadVersions();
  }

  async function loadVersions() {
    let list = await spec.versions();
    list = Array.isArray(list) ? list : list.versions || [];
    versions.replaceChildren(...list.slice().reverse().map((v) => el("tr", { "data-version": v.version },
      el("td", {}, String(v.version), v.active ? el("span", { class: "badge", style: "margin-left:.4rem" }, "en uso") : null),
      el("td", {}, v.actor || ""), el("td", {}, v.at ? when(v.at) : "ficheros"), el("td", {}, v.note || ""),
      el("td", {}, el("div", { class: "row" },
        el("button", { class: "secondary", onclick: async () => { area.value = await toYaml(await spec.getVersion(v.version));
          result.replaceChildren(el("p", { class: "muted" }, `Mostrando la versión ${v.version}. Guarde para volver a ella, o use «Restaurar».`)); } }, "Ver"),
        v.active ? null : el("button", { class: "secondary", "data-testid": `rollback-${spec.id}-${v.version}`, onclick: async () => {
          try {
            const r = await spec.rollback(v.version);
            result.replaceChildren(el("p", { class: "ok" }, `Restaurada la versión ${v.version} como versión ${r.version}.`));
            await load();
          } catch (e) { result.replaceChildren(issuesList(e)); }
        } }, "Restaurar"))))));
  }

  async function save() {
    result.replaceChildren(el("p", { class: "muted" }, "Guardando…"));
    let doc;
    try { doc = await fromYaml(area.value); } catch (e) { result.replaceChildren(issuesList(e)); return; }
    try {
      const r = await spec.save(doc, note.value.trim());
      result.replaceChildren(el("p", { class: "ok" }, `Guardada la versión ${r.version}. Ya está en uso.`));
      note.value = "";
      await loadVersions();
    } catch (e) { result.replaceChildren(issuesList(e)); }
  }

  const node = el("section", { class: "panel", style: "margin-top:1rem" },
    el("h3", { style: "margin-top:0" }, spec.title),
    spec.help ? el("p", { class: "small muted" }, spec.help) : null,
    area, el("div", { class: "row", style: "margin:.4rem 0" }, syntax),
    el("div", { class: "row" }, note, el("button", { "data-testid": `save-${spec.id}`, onclick: save }, "Guardar nueva versión"),
      el("button", { class: "secondary", onclick: load }, "Descartar cambios")),
    result,
    el("h4", {}, "Historial de versiones"),
    el("table", { "data-testid": `versions-${spec.id}` }, el("thead", {}, el("tr", {}, ["Versión", "Quién", "Cuándo", "Nota", ""].map((h) => el("th", {}, h)))), versions));
  load().catch((e) => result.replaceChildren(issuesList(e)));
  return node;
}

// ---- calendar ----------------------------------------------------------------------------------------------

const CAL = "/api/v1/admin/calendars";

function intervals(list) { return (list || []).map((i) => `${i.start}–${i.end}`).join(", ") || "cerrado"; }

async function calendarSection(box) {
  const all = await api("GET", CAL);
  const names = Object.keys(all.calendars || {});
  let name = all.default || names[0];
  const select = el("select", { "data-testid": "calendar-name", "aria-label": "Calendario" }, names.map((n) => el("option", { value: n, selected: n === name }, n)));
  const detail = el("div");
  select.addEventListener("change", () => { name = select.value; render(); });

  const atInput = el("input", { type: "datetime-local", "data-testid": "hours-at", value: "2026-12-08T10:00", "aria-label": "Día y hora a consultar" });
  const atOut = el("div", { "data-testid": "hours-result", class: "status-line" });
  async function whatHappens() {
    try {
      const h = await api("GET", `/api/v1/hours?at=${encodeURIComponent(atInput.value)}&calendar=${encodeURIComponent(name)}`);
      atOut.className = `status-line ${h.open ? "ok" : "error"}`;
      atOut.textContent = (h.open ? "Abierto" : "Cerrado") + (h.holiday ? ` (${h.holiday})` : "") + ` · regla: ${h.rule}`
        + (h.closes_at ? ` · cierra ${when(h.closes_at)}` : "") + (!h.open && h.next_open ? ` · próxima apertura: ${when(h.next_open)}` : "");
    } catch (e) { atOut.className = "status-line error"; atOut.textContent = describeError(e); }
  }

  async function edit(method, path, body, okText) {
    try { await api(method, `${CAL}/${encodeURIComponent(name)}${path}`, body); flash(okText, true); await render(); }
    catch (e) { flash(describeError(e), false); }
  }
  const flashBox = el("div", { class: "status-line", "data-testid": "calendar-result", role: "status" });
  function flash(text, ok) { flashBox.className = `status-line ${ok ? "ok" : "error"}`; flashBox.textContent = text; }

  async function render() {
    const view = await api("GET", `${CAL}/${encodeURIComponent(name)}`);
    const c = view.calendar;
    const weekly = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Periodo"), DAYS.map(([, d]) => el("th", {}, d)))),
      el("tbody", {}, el("tr", {}, el("td", {}, "Horario general"), DAYS.map(([k]) => el("td", {}, intervals(c.weekly[k])))),
        (c.seasons || []).map((s) => el("tr", {}, el("td", {}, `${s.name} (${s.start} a ${s.end})`), DAYS.map(([k]) => el("td", {}, intervals(s.weekly[k])))))));
    const hol = el("input", { type: "date", "data-testid": "holiday-date", "aria-label": "Fecha del festivo" });
    const holName = el("input", { placeholder: "Nombre de la fiesta", "data-testid": "holiday-name" });
    const clo = el("input", { type: "date", "aria-label": "Fecha del cierre" });
    const cloReason = el("input", { placeholder: "Motivo del cierre" });
    const spe = el("input", { type: "date", "aria-label": "Fecha del día especial" });
    const speFrom = el("input", { type: "time", value: "09:00", "aria-label": "Abre a las" });
    const speTo = el("input", { type: "time", value: "13:00", "aria-label": "Cierra a las" });
    const speReason = el("input", { placeholder: "Motivo" });
    detail.replaceChildren(
      el("p", { "data-testid": "hours-text" }, el("b", {}, "Horario: "), view.hours_text),
      el("p", { class: "small muted" }, `Zona horaria ${c.timezone} · festivos nacionales y autonómicos: `,
        c.public_holidays && c.public_holidays.enabled ? `${c.public_holidays.country}${c.public_holidays.subdivision ? "-" + c.public_holidays.subdivision : ""}` : "no"),
      weekly,
      el("div", { class: "grid", style: "grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); margin-top:1rem" },
        el("div", {}, el("h4", {}, "Festivos locales"),
          el("ul", { "data-testid": "holidays" }, (c.local_holidays || []).map((h) => el("li", {}, `${h.date} · ${h.name} `,
            el("button", { class: "secondary", onclick: () => edit("DELETE", `/holidays/${h.date}`, undefined, "Festivo quitado.") }, "Quitar")))),
          el("div", { class: "row" }, hol, holName, el("button", { "data-testid": "holiday-add",
            onclick: () => edit("POST", "/holidays", { date: hol.value, name: holName.value.trim() || "Festivo local" }, "Festivo añadido.") }, "Añadir"))),
        el("div", {}, el("h4", {}, "Cierres"),
          el("ul", {}, (c.closures || []).map((x) => el("li", {}, `${x.date || `${when(x.start)} – ${when(x.end)}`} · ${x.reason} `,
            x.date ? el("button", { class: "secondary", onclick: () => edit("DELETE", `/closures/${x.date}`, undefined, "Cierre quitado.") }, "Quitar") : null))),
          el("div", { class: "row" }, clo, cloReason, el("button", {
            onclick: () => edit("POST", "/closures", { date: clo.value, reason: cloReason.value.trim() || "cierre" }, "Cierre añadido.") }, "Añadir"))),
        el("div", {}, el("h4", {}, "Días especiales"),
          el("ul", {}, (c.special_days || []).map((x) => el("li", {}, `${x.date} · ${intervals(x.intervals)} · ${x.reason} `,
            el("button", { class: "secondary", onclick: () => edit("DELETE", `/special-days/${x.date}`, undefined, "Día especial quitado.") }, "Quitar")))),
          el("div", { class: "row" }, spe, speFrom, speTo, speReason, el("button", {
            onclick: () => edit("POST", "/special-days", { date: spe.value, intervals: [{ start: speFrom.value, end: speTo.value }],
              reason: speReason.value.trim() || "horario especial" }, "Día especial añadido.") }, "Añadir")))),
      icalImport(),
      flashBox);
  }

  // Holidays from iCalendar: a file or a URL, previewed date by date, then applied as one new version.
  const ICAL_STATUS = { new: "nuevo", exists: "ya está", conflict: "en conflicto", skipped: "no se importa" };
  function icalImport() {
    const file = el("input", { type: "file", id: "ical-file", accept: ".ics,text/calendar", "data-testid": "ical-file" });
    const url = el("input", { type: "url", id: "ical-url", placeholder: "https://…/festivos.ics", "data-testid": "ical-url", style: "flex:1" });
    const years = el("select", { id: "ical-years", "data-testid": "ical-years" },
      [1, 2, 3, 4, 5].map((n) => el("option", { value: n, selected: n === 2 }, n === 1 ? "este año" : `${n} años`)));
    const out = el("div", { "data-testid": "ical-preview", role: "status" });
    async function preview(fromUrl) {
      out.replaceChildren(el("p", { class: "muted" }, "Leyendo el calendario…"));
      const path = `${CAL}/${encodeURIComponent(name)}/ical/preview?years=${years.value}`;
      let p;
      try {
        if (fromUrl) p = await api("POST", path, { url: url.value.trim(), years: Number(years.value) });
        else {
          if (!file.files.length) throw new Error("Elija primero un fichero .ics.");
          p = await api("POST", path, await file.files[0].text(), { type: "text/calendar" });
          p.source = file.files[0].name;
        }
      } catch (e) { out.replaceChildren(el("p", { class: "error" }, describeError(e))); return; }
      const fresh = p.items.filter((i) => i.status === "new");
      const apply = el("button", { "data-testid": "ical-apply", disabled: !fresh.length, onclick: async () => {
        try {
          const r = await api("POST", `${CAL}/${encodeURIComponent(name)}/ical/apply`,
            { items: fresh.map((i) => ({ date: i.date, name: i.name })), source: p.source });
          await render();
          flash(`Importados ${r.added.length} festivos como versión ${r.version}` + (r.not_added.length ? ` (${r.not_added.length} ya no eran nuevos)` : "")
            + ". Se puede deshacer restaurando la versión anterior.", true);
        } catch (e) { out.append(el("p", { class: "error" }, describeError(e))); }
      } }, fresh.length ? `Aplicar ${fresh.length} festivos nuevos` : "No hay festivos nuevos");
      out.replaceChildren(
        el("table", { "data-testid": "ical-table" },
          el("caption", {}, `Del ${p.start} al ${p.end}: ${p.items.length} fechas, ${fresh.length} nuevas`),
          el("thead", {}, el("tr", {}, ["Fecha", "Nombre", "Estado", "Detalle"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, p.items.map((i) => el("tr", { "data-date": i.date, "data-status": i.status },
            el("td", {}, i.date), el("td", {}, i.name), el("td", {}, el("span", { class: `badge ical-${i.status}` }, ICAL_STATUS[i.status] || i.status)),
            el("td", { class: "small" }, i.detail || ""))))),
        el("div", { class: "row", style: "margin-top:.5rem" }, apply));
    }
    return el("section", { style: "margin-top:1rem", "aria-labelledby": "ical-title" },
      el("h4", { id: "ical-title" }, "Importar festivos de un calendario iCal"),
      el("p", { class: "small muted" }, "Se expanden las repeticiones (fiestas anuales) y se muestran para revisarlas; al aplicar se guarda una nueva versión del calendario."),
      el("div", { class: "row" }, el("label", { for: "ical-file", style: "margin:0" }, "Fichero .ics"), file,
        el("button", { class: "secondary", "data-testid": "ical-preview-file", onclick: () => preview(false) }, "Vista previa del fichero")),
      el("div", { class: "row" }, el("label", { for: "ical-url", style: "margin:0" }, "o dirección"), url,
        el("button", { class: "secondary", "data-testid": "ical-preview-url", onclick: () => preview(true) }, "Vista previa de la URL")),
      el("div", { class: "row" }, el("label", { for: "ical-years", style: "margin:0" }, "Periodo"), years),
      out);
  }

  box.append(
    el("section", { class: "panel" },
      el("div", { class: "row" }, el("label", { style: "margin:0" }, "Calendario"), select),
      el("h3", {}, "¿Qué pasa el…?"),
      el("div", { class: "row" }, atInput, el("button", { "data-testid": "hours-check", onclick: whatHappens }, "Consultar")), atOut,
      el("h3", {}, "Horario, festivos y cierres"), detail),
    yamlEditor({
      id: "calendar", title: "Editar todo el calendario (YAML)",
      help: "Horario semanal (weekly), horario de verano (seasons), festivos, cierres y días especiales. Al guardar se valida; si hay errores se muestran aquí y sigue en uso la versión anterior.",
      load: async () => { const d = await api("GET", CAL); return { default: d.default, calendars: d.calendars }; },
      save: (doc) => api("PUT", CAL, doc),
      versions: () => api("GET", `${CAL}/versions`),
      getVersion: (v) => api("GET", `${CAL}/versions/${v}`),
      rollback: (v) => api("POST", `${CAL}/rollback`, { version: v }),
    }));
  await render();
}

// ---- versions side by side, and drafts waiting for an admin ----------------------------------------------------

const DIFF_SECTIONS = [["flows", "Flujos"], ["prompts", "Mensajes"], ["routing", "Intenciones"], ["calendar", "Calendario"]];
const ROLLBACK = { flows: "/api/v1/admin/ivr/flows/rollback", prompts: "/api/v1/admin/ivr/flows/rollback",
  routing: "/api/v1/admin/routing/rollback", calendar: "/api/v1/admin/calendars/rollback" };
const CONTEXT = 3;  // equal lines shown around each change

function diffTable(d) {
  const rows = [];
  const changed = d.rows.map((r) => r.op !== "equal");
  let skipped = 0;
  const flush = () => { if (skipped) rows.push(el("tr", { class: "skip" }, el("td", { colspan: 4 }, `… ${skipped} líneas iguales …`))); skipped = 0; };
  d.rows.forEach((r, i) => {
    const near = changed.slice(Math.max(0, i - CONTEXT), i + CONTEXT + 1).some(Boolean);
    if (r.op === "equal" && !near) { skipped += 1; return; }
    flush();
    rows.push(el("tr", { class: `d-${r.op}` }, el("td", { class: "ln" }, r.a_line ?? ""), el("td", { class: "code a" }, r.a ?? ""),
      el("td", { class: "ln" }, r.b_line ?? ""), el("td", { class: "code b" }, r.b ?? "")));
  });
  flush();
  const who = (v) => `versión ${v.version} · ${v.actor}${v.at ? ` · ${when(v.at)}` : ""}${v.note ? ` · ${v.note}` : ""}`;
  return el("table", { class: "diff", "data-testid": "diff-table" },
    el("caption", { class: "small muted" }, d.changed ? `${d.changed} líneas distintas` : "Las dos versiones son iguales"),
    el("thead", {}, el("tr", {}, el("th", { colspan: 2, scope: "colgroup" }, who(d.a)), el("th", { colspan: 2, scope: "colgroup" }, who(d.b)))),
    el("tbody", {}, rows));
}

async function versionsSection(box) {
  const section = el("select", { "aria-label": "Qué comparar", "data-testid": "diff-section" }, DIFF_SECTIONS.map(([v, l]) => el("option", { value: v }, l)));
  const a = el("select", { "aria-label": "Versión de la izquierda", "data-testid": "diff-a" });
  const b = el("select", { "aria-label": "Versión de la derecha", "data-testid": "diff-b" });
  const out = el("div", { "data-testid": "diff-out" });
  const result = el("div", { class: "status-line", role: "status", "data-testid": "versions-result" });
  let versions = [];

  async function loadVersions() {
    versions = (await api("GET", `/api/v1/admin/versions/${section.value}`)).versions;
    const opts = (sel) => versions.slice().reverse().map((v) => el("option", { value: v.version, selected: v.version === sel },
      `${v.version}${v.active ? " (en uso)" : ""} · ${v.actor} · ${v.at ? when(v.at) : "ficheros"}${v.note ? ` · ${v.note}` : ""}`));
    const current = (versions.find((v) => v.active) || versions[versions.length - 1]).version;
    a.replaceChildren(...opts(Math.max(0, current - 1)));
    b.replaceChildren(...opts(current));
    await compare();
  }
  async function compare() {
    try { out.replaceChildren(diffTable(await api("GET", `/api/v1/admin/versions/${section.value}/diff?a=${a.value}&b=${b.value}`))); }
    catch (e) { out.replaceChildren(el("p", { class: "error" }, describeError(e))); }
  }
  async function rollback(v) {
    if (!confirm(`¿Volver a la versión ${v}? Se guarda como una versión nueva; la historia no se pierde.`)) return;
    try {
      const r = await api("POST", ROLLBACK[section.value], { version: Number(v) });
      result.className = "status-line ok"; result.textContent = `Restaurada la versión ${v} como versión ${r.version}.`;
      if (Admin.flowsDraft) Admin.flowsDraft.doc = null;
      if (Admin.routingDraft) Admin.routingDraft.doc = null;
      await loadVersions();
    } catch (e) { result.className = "status-line error"; result.replaceChildren(issuesList(e)); }
  }
  section.addEventListener("change", loadVersions);
  a.addEventListener("change", compare);
  b.addEventListener("change", compare);

  const drafts = el("div", { "data-testid": "drafts" });
  async function loadDrafts() {
    const parts = [];
    for (const [s, title, tab] of [["ivr", "Flujos y mensajes", "flows"], ["routing", "Intenciones", "intents"]]) {
      const list = (await api("GET", `/api/v1/editor/drafts/${s}`)).drafts;
      parts.push(el("h4", {}, `${title} (${list.length})`), list.length ? el("table", {}, el("thead", {}, el("tr", {}, ["Quién", "Cuándo", "Nota", "Sobre la versión", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, list.map((d) => el("tr", { "data-testid": `draft-${d.id}` }, el("td", {}, d.author), el("td", {}, when(d.at)), el("td", {}, d.note || ""), el("td", {}, String(d.base_version)),
          el("td", {}, el("div", { class: "row" },
            el("button", { class: "secondary", onclick: async () => {
              const full = await api("GET", `/api/v1/editor/drafts/${s}/${d.id}`);
              const target = s === "ivr" ? Admin.flowsDraft : Admin.routingDraft;
              await target.load();
              target.doc = full.document; target.dirty = true;
              if (s === "ivr") await target.validate();
              Admin.show(tab);
            } }, "Abrir en el editor"),
            el("button", { "data-testid": `publish-${d.id}`, onclick: async function publish(_ev, anyway = false) {
              try { const r = await api("POST", `/api/v1/admin/drafts/${s}/${d.id}/publish${anyway ? "?force=true&confirm_worse=true" : ""}`); result.className = "status-line ok";
                result.textContent = `Publicado el borrador de ${r.author}: versión ${r.version}.`; if (Admin.flowsDraft) Admin.flowsDraft.doc = null; await loadDrafts(); await loadVersions(); }
              catch (e) {
                result.className = "status-line error"; result.replaceChildren(issuesList(e));
                // Made over an older version, or worse on the check set: the admin decides, knowingly.
                if (e.status === 409 && ["draft-outdated", "dev-set-worse"].includes(e.body.error_id)) {
                  result.append(el("div", { class: "row" },
                    el("button", { class: "danger", "data-testid": `publish-anyway-${d.id}`, onclick: () => publish(null, true) }, "Publicar de todos modos"),
                    el("button", { class: "secondary", onclick: () => { result.textContent = ""; } }, "No publicar")));
                }
              }
            } }, "Publicar"),
            el("button", { class: "danger", onclick: async () => {
              try { await api("DELETE", `/api/v1/admin/drafts/${s}/${d.id}`); await loadDrafts(); } catch (e) { result.textContent = describeError(e); }
            } }, "Descartar"))))))) : el("p", { class: "muted small" }, "Ninguno."));
    }
    drafts.replaceChildren(...parts);
  }

  box.append(el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Comparar versiones"),
    el("div", { class: "row" }, section, a, el("span", { "aria-hidden": "true" }, "↔"), b,
      el("button", { class: "secondary", "data-testid": "diff-rollback-a", onclick: () => rollback(a.value) }, "Volver a la versión de la izquierda")),
    result, out),
  el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Borradores propuestos"),
    el("p", { class: "small muted" }, "Los supervisores proponen cambios; un administrador los revisa (ábralos en el editor o en el simulador) y los publica."), drafts));
  await loadVersions();
  await loadDrafts();
}
Admin.sections.versions = versionsSection;

// ---- queues, agents, users --------------------------------------------------------------------------------------

async function peopleSection(box) {
  const [queues, agents, users] = await Promise.all([api("GET", "/api/v1/queues"), api("GET", "/api/v1/agents"), api("GET", "/api/v1/users")]);
  const result = el("div", { class: "status-line", role: "status", "data-testid": "people-result" });
  const done = (text, ok = true) => { result.className = `status-line ${ok ? "ok" : "error"}`; result.textContent = text; };

  const agentRows = agents.map((a) => {
    const level = el("select", { "aria-label": "Nivel" }, [1, 2].map((n) => el("option", { value: n, selected: a.level === n }, `N${n}`)));
    const skills = el("input", { value: (a.skills || []).join(", "), size: 18 });
    return el("tr", {}, el("td", {}, a.id), el("td", {}, a.name), el("td", {}, level), el("td", {}, skills),
      el("td", {}, el("span", { class: "badge" }, a.presence)), el("td", {}, a.current || ""),
      el("td", {}, el("div", { class: "row" }, el("button", { class: "secondary", onclick: async () => {
        try {
          await api("PUT", `/api/v1/agents/${encodeURIComponent(a.id)}`, { name: a.name, level: Number(level.value),
            skills: skills.value.split(",").map((s) => s.trim()).filter(Boolean), sip_uri: a.sip_uri || null });
          done(`Agente ${a.id} actualizado.`);
        } catch (e) { done(describeError(e), false); }
      } }, "Guardar"),
      a.current ? el("button", { class: "secondary", title: "Deja al agente libre de la llamada o ticket que tenía reservado", onclick: async () => {
        try { await api("POST", `/api/v1/agents/${encodeURIComponent(a.id)}/release`, {}); done(`Agente ${a.id} liberado.`); }
        catch (e) { done(describeError(e), false); }
      } }, "Liberar") : null,
      el("button", { class: "danger", onclick: async () => {
        if (!confirm(`¿Quitar al agente ${a.id}?`)) return;
        try { await api("DELETE", `/api/v1/agents/${encodeURIComponent(a.id)}`); done(`Agente ${a.id} quitado.`); box.replaceChildren(); await peopleSection(box); }
        catch (e) { done(describeError(e), false); }
      } }, "Quitar"))));
  });

  const f = { username: el("input", { "data-testid": "user-username", placeholder: "usuario" }), name: el("input", { placeholder: "Nombre y apellidos" }),
    role: el("select", { "aria-label": "Rol" }, [["agent_n1", "Agente N1"], ["agent_n2", "Agente N2"], ["supervisor", "Supervisor"], ["admin", "Administrador"]]
      .map(([v, l]) => el("option", { value: v }, l))),
    password: el("input", { type: "password", placeholder: "contraseña (8+)" }), skills: el("input", { placeholder: "habilidades: general, quejas" }) };
  const create = el("button", { "data-testid": "user-create", onclick: async () => {
    const role = f.role.value;
    try {
      await api("POST", "/api/v1/users", { username: f.username.value.trim(), name: f.name.value.trim() || f.username.value.trim(), roles: [role],
        password: f.password.value, level: role === "agent_n2" ? 2 : role === "agent_n1" ? 1 : null,
        skills: f.skills.value.split(",").map((s) => s.trim()).filter(Boolean) });
      done(`Usuario ${f.username.value.trim()} creado.`);
      box.replaceChildren(); await peopleSection(box);
    } catch (e) { done(describeError(e), false); }
  } }, "Crear usuario");

  box.append(
    el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Colas"),
      el("table", { "data-testid": "queues-table" }, el("thead", {}, el("tr", {}, ["Cola", "Nombre", "Nivel", "Habilidades", "Esperando", "Activos", "Agentes disponibles"].map((h) => el("th", {}, h)))),
        el("tbody", {}, (queues.queues || []).map((q) => el("tr", {}, el("td", {}, q.id), el("td", {}, q.name), el("td", {}, `N${q.level}`),
          el("td", {}, (q.skills || []).join(", ")), el("td", {}, String(q.waiting)), el("td", {}, String(q.active)), el("td", {}, String(q.agents_available)))))),
      el("p", { class: "small muted" }, "Las colas se definen en la configuración (desk.yaml).")),
    el("section", { class: "panel", style: "margin-top:1rem" }, el("h3", { style: "margin-top:0" }, "Agentes"),
      el("table", { "data-testid": "agents-table" }, el("thead", {}, el("tr", {}, ["Id", "Nombre", "Nivel", "Habilidades", "Presencia", "Atendiendo", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, agentRows))),
    el("section", { class: "panel", style: "margin-top:1rem" }, el("h3", { style: "margin-top:0" }, "Usuarios"),
      el("table", {}, el("thead", {}, el("tr", {}, ["Usuario", "Nombre", "Roles", "Activo"].map((h) => el("th", {}, h)))),
        el("tbody", {}, users.map((u) => el("tr", {}, el("td", {}, u.username), el("td", {}, u.name), el("td", {}, u.roles.join(", ")), el("td", {}, u.active ? "sí" : "no"))))),
      el("h4", {}, "Nuevo usuario"), el("div", { class: "row" }, f.username, f.name, f.role, f.password, f.skills, create)),
    apiKeys(done),
    result);
}

function apiKeys(done) {
  const name = el("input", { placeholder: "nombre (p. ej. ivr-nodo-2)" });
  const role = el("select", { "aria-label": "Rol de la clave" }, ["supervisor", "agent_n1", "agent_n2", "admin"].map((r) => el("option", { value: r }, r)));
  const shown = el("p", { class: "small", "data-testid": "api-key" });
  return el("section", { class: "panel", style: "margin-top:1rem" }, el("h3", { style: "margin-top:0" }, "Claves de API (máquinas)"),
    el("p", { class: "small muted" }, "Para otros nodos o sistemas. La clave se muestra una sola vez."),
    el("div", { class: "row" }, name, role, el("button", { onclick: async () => {
      try {
        const k = await api("POST", "/api/v1/api-keys", { name: name.value.trim(), roles: [role.value] });
        shown.replaceChildren("Clave de ", el("b", {}, k.name), ": ", el("code", {}, k.key));
        done(`Clave ${k.name} creada.`);
      } catch (e) { done(describeError(e), false); }
    } }, "Crear clave")), shown);
}

// ---- citizens: look up, see their tickets, merge two records of one person -------------------------------------

async function citizensSection(box) {
  const list = await api("GET", "/api/v1/citizens?limit=100");
  const out = el("div", { class: "status-line", role: "status" });
  const keep = el("input", { placeholder: "id que se conserva" }), other = el("input", { placeholder: "id que se une" });
  box.append(el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Ciudadanos"),
    el("table", { "data-testid": "citizens-table" }, el("thead", {}, el("tr", {}, ["Id", "Nombre", "Identidades", "Alta"].map((h) => el("th", {}, h)))),
      el("tbody", {}, list.map((c) => el("tr", {}, el("td", {}, el("code", {}, c.id)), el("td", {}, c.name || ""),
        el("td", {}, (c.identities || []).map((i) => el("span", { class: "badge", style: "margin-right:.3rem" }, `${i.kind}: ${i.value}`))),
        el("td", {}, when(c.created_at)))))),
    el("h4", {}, "Unir dos registros de la misma persona"),
    el("div", { class: "row" }, keep, other, el("button", { onclick: async () => {
      try {
        await api("POST", `/api/v1/citizens/${encodeURIComponent(keep.value.trim())}/merge`, { other_id: other.value.trim() });
        out.className = "status-line ok"; out.textContent = "Registros unidos.";
      } catch (e) { out.className = "status-line error"; out.textContent = describeError(e); }
    } }, "Unir")), out));
}

Object.assign(Admin, { yamlEditor, issuesList, toYaml, fromYaml });
// The section scripts load after this one; start once they have registered.
window.addEventListener("DOMContentLoaded", () =>
  init().catch((e) => { if (e.message !== "login" && e.message !== "forbidden") console.error(e); }));
