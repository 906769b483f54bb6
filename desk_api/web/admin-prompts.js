// Every text the IVR says in one place: the named prompts and the texts written inside steps, editable, with the
// placeholders filled with today's real values (hours, next opening, a reference) and a «listen» button that plays
// it with the configured voice through the prompt cache. Edits go to the same draft as the flows editor.
"use strict";

(() => {
  const { api, el } = Atiende;
  const PLACEHOLDER = /\{([a-z_]+)\}/g;
  const NAMES = { hours: "horario", next_open: "próxima apertura", reference: "referencia", line_name: "nombre de la línea",
    institution: "institución", today: "hoy", closed_reason: "motivo del cierre", label: "intención", key: "tecla", name: "servicio", line_number: "número" };

  function fill(text, values) {
    const unknown = [];
    const out = (text || "").replace(PLACEHOLDER, (m, k) => { if (k in values) return values[k]; unknown.push(k); return m; });
    return { out, unknown };
  }

  async function promptsSection(box) {
    const Draft = Admin.flowsDraft;
    await Draft.load();
    const info = await api("GET", "/api/v1/editor/prompts");
    const values = info.values;
    const bar = el("div");
    const list = el("div", { class: "prompts", "data-testid": "prompts-list" });

    function card(title, getText, setText, extra, testid) {
      const area = el("textarea", { rows: 2, "data-testid": `prompt-text-${testid}`, "aria-label": `Texto de ${title}` });
      area.value = getText() || "";
      const preview = el("p", { class: "small preview", "data-testid": `prompt-preview-${testid}` });
      const chips = el("div", { class: "row small" });
      const render = () => {
        const { out, unknown } = fill(area.value, values);
        preview.replaceChildren(el("span", { class: "muted" }, "Se oirá: "), out);
        chips.replaceChildren(...[...new Set([...area.value.matchAll(PLACEHOLDER)].map((m) => m[1]))].map((k) =>
          el("span", { class: `badge${unknown.includes(k) ? " bad" : ""}`, title: k in values ? `${k} = ${values[k]}` : "nadie rellena este dato" },
            `{${k}} ${NAMES[k] || ""}${unknown.includes(k) ? " (desconocido)" : ""}`)));
      };
      area.addEventListener("input", () => { setText(area.value); Draft.changed(); render(); });
      render();
      return el("article", { class: "panel prompt", "data-testid": `prompt-${testid}` }, el("h4", { style: "margin:0" }, title), extra, area, chips, preview,
        Admin.listenControls(() => area.value));
    }

    function render() {
      const doc = Draft.doc;
      const used = Object.fromEntries(info.prompts.map((p) => [p.key, p.used_by]));
      const named = Object.keys(doc.prompts || {}).map((key) => card(key, () => doc.prompts[key], (t) => { doc.prompts[key] = t; },
        el("p", { class: "small muted" }, (used[key] || []).length ? `Lo usan: ${used[key].map((u) => `${u.flow} (paso ${u.step + 1})`).join(", ")}` : "Sin uso directo en los flujos (lo usa el motor o nadie)."), key));
      const inline = [];
      for (const [flow, steps] of Object.entries(doc.flows || {})) {
        steps.forEach((s, i) => {
          if (typeof s.text !== "string") return;
          inline.push(card(`${flow} · paso ${i + 1} (${s.verb})`, () => s.text, (t) => { s.text = t; }, null, `${flow}-${i}`));
        });
      }
      const key = el("input", { placeholder: "nombre_del_mensaje", "aria-label": "Nombre del mensaje nuevo", "data-testid": "prompt-new-key" });
      const text = el("input", { placeholder: "Texto que dirá el IVR", "aria-label": "Texto del mensaje nuevo", "data-testid": "prompt-new-text", style: "flex:1" });
      const add = el("button", { type: "button", "data-testid": "prompt-add", onclick: () => {
        const k = key.value.trim().toLowerCase().replace(/[^a-z0-9_]+/g, "_");
        if (!k || (doc.prompts || {})[k] !== undefined) { key.setAttribute("aria-invalid", "true"); return; }
        doc.prompts = doc.prompts || {};
        doc.prompts[k] = text.value; Draft.changed(); render();
      } }, "Añadir mensaje");
      list.replaceChildren(
        el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Valores de hoy"),
          el("p", { class: "small muted" }, "Así se rellenan los datos entre llaves ahora mismo (la referencia es un ejemplo)."),
          el("dl", { class: "values" }, Object.entries(values).flatMap(([k, v]) => [el("dt", {}, `{${k}}`), el("dd", {}, v || "(vacío)")]))),
        el("h3", {}, "Mensajes con nombre"), el("div", { class: "cards" }, named),
        el("div", { class: "row panel" }, key, text, add),
        el("h3", {}, "Textos escritos en los pasos"), el("div", { class: "cards" }, inline));
    }

    const saved = () => { render(); };
    const sb = Admin.flowsSaveBar ? Admin.flowsSaveBar(saved) : null;
    if (sb) bar.append(sb.node);
    box.append(bar, list);
    render();
  }

  Admin.sections.prompts = promptsSection;
})();
