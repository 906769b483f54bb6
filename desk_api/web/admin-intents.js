// Intents as cards: description, confirmation question, queue and target; phrases and keywords as lists with
// weights as sliders. «Probar» shows every intent's score for an utterance and the words that counted, with the
// draft. Saving first scores the shipped dev set before and after; a change that makes it worse asks first.
"use strict";

(() => {
  const { api, el, describeError } = Atiende;

  const Draft = {
    doc: null, version: null, dirty: false,
    async load(force) {
      if (this.doc && !force) return;
      const r = await api("GET", "/api/v1/editor/routing");
      this.doc = r.document; this.version = r.version; this.dirty = false;
      Admin.intentIds = (this.doc.intents || []).map((i) => i.id);
    },
    changed() { this.dirty = true; },
  };
  Admin.routingDraft = Draft;

  let uid = 0;
  const fid = () => `i-${++uid}`;
  const pct = (x) => `${(x * 100).toFixed(1).replace(".", ",")} %`;

  function labelled(text, control) {
    control.id = control.id || fid();
    return el("div", { class: "field" }, el("label", { for: control.id }, text), control);
  }

  function textField(obj, key, label, onChange, attrs = {}) {
    const i = el("input", { ...attrs });
    i.value = obj[key] ?? "";
    i.addEventListener("input", () => { if (i.value === "" && !(key in obj)) return; obj[key] = i.value; onChange(); });
    return labelled(label, i);
  }

  function slider(value, label, onInput) {
    const r = el("input", { type: "range", min: -0.95, max: 0.95, step: 0.05, "aria-label": label });
    r.value = value;
    const out = el("output", { class: value < 0 ? "error" : "" }, Number(value).toFixed(2));
    r.addEventListener("input", () => {
      let v = Number(r.value);
      if (v === 0) v = 0.05;  // 0 is not a weight: nudge to the nearest allowed one
      out.textContent = v.toFixed(2); out.className = v < 0 ? "error" : "";
      onInput(v);
    });
    return [r, out];
  }

  function intentCard(intent, onChange, rerender) {
    const phrases = el("ul", { class: "editlist", "aria-label": `Frases de ${intent.id}` });
    const renderPhrases = () => {
      phrases.replaceChildren(...(intent.phrases || []).map((p, i) => {
        const input = el("input", { "aria-label": `Frase ${i + 1} de ${intent.id}`, style: "flex:1" });
        input.value = p;
        input.addEventListener("input", () => { intent.phrases[i] = input.value; onChange(); });
        return el("li", { class: "row" }, input, el("button", { type: "button", class: "secondary", "aria-label": `Quitar la frase ${i + 1} de ${intent.id}`,
          onclick: () => { intent.phrases.splice(i, 1); onChange(); renderPhrases(); } }, "×"));
      }));
    };
    renderPhrases();
    const newPhrase = el("input", { placeholder: "Nueva frase de ejemplo", "aria-label": `Nueva frase para ${intent.id}`, "data-testid": `phrase-new-${intent.id}`, style: "flex:1" });
    const addPhrase = el("button", { type: "button", class: "secondary", "data-testid": `phrase-add-${intent.id}`, onclick: () => {
      if (!newPhrase.value.trim()) return;
      (intent.phrases = intent.phrases || []).push(newPhrase.value.trim()); newPhrase.value = ""; onChange(); renderPhrases();
    } }, "Añadir frase");

    const keywords = el("ul", { class: "editlist", "aria-label": `Palabras clave de ${intent.id}` });
    const renderKeywords = () => {
      keywords.replaceChildren(...Object.entries(intent.keywords || {}).map(([k, w]) => {
        const [r, out] = slider(w, `Peso de «${k}» en ${intent.id}`, (v) => { intent.keywords[k] = v; onChange(); });
        return el("li", { class: "row" }, el("code", { class: "kw" }, k), r, out, el("button", { type: "button", class: "secondary", "aria-label": `Quitar «${k}» de ${intent.id}`,
          onclick: () => { delete intent.keywords[k]; onChange(); renderKeywords(); } }, "×"));
      }));
    };
    renderKeywords();
    const newKw = el("input", { placeholder: "palabra o palabras", "aria-label": `Nueva palabra clave para ${intent.id}`, "data-testid": `kw-new-${intent.id}` });
    let newW = 0.5;
    const [newR, newOut] = slider(newW, `Peso de la nueva palabra clave de ${intent.id}`, (v) => { newW = v; });
    const addKw = el("button", { type: "button", class: "secondary", "data-testid": `kw-add-${intent.id}`, onclick: () => {
      const k = newKw.value.trim().toLowerCase();
      if (!k) return;
      (intent.keywords = intent.keywords || {})[k] = newW; newKw.value = ""; onChange(); renderKeywords();
    } }, "Añadir palabra");

    const target = el("select", {}, [["self_service", "autoservicio"], ["queue", "cola (persona)"]].map(([v, l]) => el("option", { value: v, selected: (intent.target || "queue") === v }, l)));
    target.addEventListener("change", () => { intent.target = target.value; onChange(); });
    return el("article", { class: "panel intent", "data-testid": `intent-${intent.id}` },
      el("h3", { style: "margin-top:0" }, intent.id),
      el("div", { class: "grid2" }, textField(intent, "description", "Descripción", onChange), textField(intent, "confirm", "Pregunta de confirmación", onChange),
        textField(intent, "queue", "Cola", onChange, { size: 6 }), labelled("Destino", target)),
      el("details", {}, el("summary", {}, `Frases de ejemplo (${(intent.phrases || []).length})`), phrases, el("div", { class: "row" }, newPhrase, addPhrase)),
      el("details", {}, el("summary", {}, `Palabras clave (${Object.keys(intent.keywords || {}).length})`),
        el("p", { class: "small muted" }, "Peso ~0,9: decide sola · ~0,5: pista fuerte · ~0,25: pista débil · negativo: inhibe esta intención."),
        keywords, el("div", { class: "row" }, newKw, newR, newOut, addKw)));
  }

  function scoresTable(r) {
    return el("div", { "data-testid": "try-result" },
      el("p", {}, el("b", {}, r.intent ? `→ ${r.intent}` : "→ fuera de ámbito"), ` · confianza ${pct(r.confidence)} · umbral ${pct(r.threshold)}`,
        r.needs_confirmation ? " · preguntaría «¿Quiere…?»" : "", el("br"), el("span", { class: "small muted" }, `Texto normalizado: «${r.normalized}»`)),
      el("table", { class: "scores" }, el("thead", {}, el("tr", {}, el("th", {}, "Intención"), el("th", {}, "Puntuación"), el("th", {}, "Palabras que cuentan"), el("th", {}, "Frase más parecida"))),
        el("tbody", {}, r.scores.map((s) => el("tr", { class: s.intent === r.intent ? "sel" : "" }, el("td", {}, s.intent),
          el("td", {}, el("div", { class: "bar", role: "img", "aria-label": `${pct(s.score)}` }, el("span", { style: `width:${Math.round(s.score * 100)}%` })), pct(s.score)),
          el("td", {}, s.keywords.map((k) => el("span", { class: `badge${k.weight < 0 ? " bad" : ""}`, style: "margin-right:.25rem" }, `${k.keys} ${k.weight.toFixed(2)}`))),
          el("td", {}, s.phrase ? pct(s.phrase) : "—"))))));
  }

  function checkView(c) {
    return el("div", { "data-testid": "check-result" },
      el("p", {}, `Conjunto de comprobación (${c.samples} frases): acierto ${pct(c.accuracy_before)} → `, el("b", { class: c.worse ? "error" : "ok" }, pct(c.accuracy_after))),
      c.changed.length ? el("ul", { class: "small" }, c.changed.slice(0, 20).map((x) => el("li", { class: x.effect === "lost" ? "error" : x.effect === "won" ? "ok" : "" },
        `«${x.text}»: ${x.before || "fuera"} → ${x.after || "fuera"} (esperada: ${x.expected || "fuera de ámbito"})`))) : el("p", { class: "small muted" }, "Ninguna frase cambia de intención."));
  }

  async function intentsSection(box) {
    await Draft.load();
    const text = el("input", { placeholder: "Escriba lo que diría un ciudadano…", style: "flex:1", "data-testid": "route-text", "aria-label": "Frase para probar", value: "quiero pagar la tasa de la itv" });
    const tryOut = el("div", { role: "status", "aria-live": "polite" });
    const result = el("div", { class: "status-line", role: "status", "data-testid": "intents-result" });
    const note = el("input", { placeholder: "Nota del cambio (opcional)", "aria-label": "Nota del cambio de intenciones", style: "flex:1" });
    const cards = el("div", { class: "cards" });
    const onChange = () => { Draft.changed(); };
    const renderCards = () => cards.replaceChildren(...(Draft.doc.intents || []).map((i) => intentCard(i, onChange, renderCards)));

    async function probar() {
      try { tryOut.replaceChildren(scoresTable(await api("POST", "/api/v1/editor/routing/try", { text: text.value, channel: "voice", config: Draft.dirty ? Draft.doc : null }))); }
      catch (e) { tryOut.replaceChildren(el("p", { class: "error" }, describeError(e))); }
    }
    text.addEventListener("keydown", (e) => { if (e.key === "Enter") probar(); });

    async function store() {
      if (Admin.isAdmin) {
        // `base`: the version these cards were loaded from; if someone saved another meanwhile the API refuses (409)
        // instead of silently writing over their change.
        const base = Number.isInteger(Draft.version) ? `?base=${Draft.version}` : "";
        const r = await api("PUT", `/api/v1/admin/routing${base}`, Draft.doc);
        await Draft.load(true); renderCards();
        return `Guardada la versión ${r.version} de las intenciones. Ya está en uso.`;
      }
      const r = await api("POST", "/api/v1/editor/drafts/routing", { document: Draft.doc, note: note.value.trim() });
      return `Borrador ${r.id} enviado: un administrador lo revisará y lo publicará.`;
    }

    async function save() {
      result.className = "status-line muted"; result.textContent = "Comprobando con el conjunto de frases…";
      try {
        const c = await api("POST", "/api/v1/editor/routing/check", { config: Draft.doc });
        const view = checkView(c);
        if (c.worse) {
          const go = el("button", { class: "danger", "data-testid": "intents-save-anyway", onclick: async () => {
            try { result.className = "status-line ok"; result.replaceChildren(view, el("p", {}, await store())); } catch (e) { result.className = "status-line error"; result.replaceChildren(Admin.issuesList(e)); }
          } }, "Guardar de todos modos");
          result.className = "status-line error";
          result.replaceChildren(el("p", {}, el("b", {}, "Este cambio empeora el acierto. ¿Seguro que quiere guardarlo?")), view,
            el("div", { class: "row" }, go, el("button", { class: "secondary", onclick: () => { result.textContent = ""; } }, "No guardar")));
          return;
        }
        result.className = "status-line ok";
        result.replaceChildren(view, el("p", {}, await store()));
      } catch (e) { result.className = "status-line error"; result.replaceChildren(Admin.issuesList(e)); }
    }

    box.append(
      el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Probar"),
        el("p", { class: "small muted" }, "La puntuación de cada intención para una frase y qué palabras han contado (con los cambios sin guardar)."),
        el("div", { class: "row" }, text, el("button", { "data-testid": "route-try", onclick: probar }, "Probar")), tryOut),
      el("section", { class: "panel savebar" }, el("div", { class: "row" }, note,
        el("button", { "data-testid": "intents-save", onclick: save }, Admin.isAdmin ? "Comprobar y guardar" : "Comprobar y proponer borrador"),
        el("button", { class: "secondary", onclick: async () => { await Draft.load(true); renderCards(); result.textContent = ""; } }, "Descartar cambios")), result),
      cards);
    renderCards();
    if (Admin.isAdmin) {
      const R = "/api/v1/admin/routing";
      box.append(Admin.yamlEditor({
        id: "intents", title: "Intenciones, ejemplos y palabras clave (YAML)",
        help: "Para usuarios avanzados: el mismo documento completo. Guardar aquí no pasa por la comprobación.",
        load: async () => (await api("GET", R)).config,
        save: (doc, n) => api("PUT", `${R}${n ? `?note=${encodeURIComponent(n)}` : ""}`, doc),
        versions: () => api("GET", `${R}/versions`),
        getVersion: (v) => api("GET", `${R}/versions/${v}`),
        rollback: (v) => api("POST", `${R}/rollback`, { version: v }),
      }));
    }
  }

  Admin.sections.intents = intentsSection;
})();
