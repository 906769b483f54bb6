// The learning loop: what callers and chat users said that was not understood, or understood only after «¿Quiere…?»
// (confirmed or denied), grouped with counts, confidence and each contact's trace; the intents the router confuses;
// and one action per row that teaches an intent the phrase or a keyword (a new routing version, checked on the dev
// set first, undone with «Deshacer»). A confirmation whose yes or no was picked by comparing the audio with the expected
// answers (the transcript had no words or one: "C," for a "sí") says so on its contact, with what was transcribed.
"use strict";

(() => {
  const { api, el, when, describeError } = Atiende;
  const pct = (x) => (x === null || x === undefined ? "—" : `${Math.round(x * 100)} %`);
  const chosenText = (c) => `Entendido «${c.value}» por comparación con las respuestas esperadas (${c.transcribed ? `lo transcrito: «${c.transcribed}»` : "no se transcribió nada"}; margen ${c.margin.toLocaleString("es-ES", { maximumFractionDigits: 1 })})`;
  const FATES = [["not_understood", "No entendidas", "El IVR no supo qué pedían: volvió a preguntar o pasó al teclado."],
    ["denied", "Confirmaciones rechazadas", "El IVR preguntó «¿Quiere…?» y le dijeron que no."],
    ["confirmed", "Confirmaciones aceptadas", "El IVR dudó, preguntó y acertó: añadirlas evita la pregunta la próxima vez."]];

  async function learningSection(box) {
    const days = el("select", { "aria-label": "Periodo", "data-testid": "learning-days" }, [[7, "7 días"], [30, "30 días"], [90, "90 días"]].map(([v, l]) => el("option", { value: v, selected: v === 30 }, l)));
    const content = el("div");
    const result = el("div", { class: "status-line", role: "status", "data-testid": "learning-result" });
    let intents = [];
    try { intents = ((await api("GET", "/api/v1/editor/routing")).document.intents || []).map((i) => i.id); } catch (e) { intents = []; }

    async function teach(body, row) {
      result.className = "status-line muted"; result.textContent = "Comprobando con el conjunto de frases…";
      try {
        const r = await api("POST", "/api/v1/admin/learning/teach", body);
        done(r);
      } catch (e) {
        if (e.status === 409 && e.details && e.details.check) {
          const c = e.details.check;
          result.className = "status-line error";
          result.replaceChildren(el("p", {}, `El acierto bajaría de ${pct(c.accuracy_before)} a ${pct(c.accuracy_after)}. `),
            el("button", { class: "danger", "data-testid": "teach-anyway", onclick: async () => {
              try { done(await api("POST", "/api/v1/admin/learning/teach", { ...body, confirm_worse: true })); } catch (x) { result.textContent = describeError(x); }
            } }, "Añadir de todos modos"));
          return;
        }
        result.className = "status-line error"; result.replaceChildren(Admin.issuesList(e));
      }
      function done(r) {
        result.className = "status-line ok";
        // «Deshacer» undoes this version only: the server refuses (409) once another one was saved after it.
        result.replaceChildren(`Añadida la ${r.added} a ${r.intent}: versión ${r.version} de las intenciones (acierto ${pct(r.check.accuracy_before)} → ${pct(r.check.accuracy_after)}). `,
          el("button", { class: "secondary", "data-testid": "teach-undo", onclick: async () => {
            try { const x = await api("POST", "/api/v1/admin/learning/undo", { version: r.version }); result.textContent = `Deshecho: vuelve a estar en uso lo de la versión ${x.rolled_back_to} (guardado como versión ${x.version}).`; load(); }
            catch (err) { result.className = "status-line error"; result.textContent = describeError(err); }
          } }, "Deshacer"));
        if (Admin.routingDraft) Admin.routingDraft.doc = null;  // the intents tab reloads the new version
        if (row) row.classList.add("taught");
      }
    }

    function groupRow(g, fate, i) {
      const intent = el("select", { "aria-label": `Intención para «${g.text}»`, "data-testid": `teach-intent-${fate}-${i}` },
        intents.map((x) => el("option", { value: x, selected: x === (g.final_intent || (g.router_now && g.router_now.intent)) }, x)));
      const mode = el("select", { "aria-label": `Añadir «${g.text}» como`, "data-testid": `teach-mode-${fate}-${i}` }, el("option", { value: "phrase" }, "frase de ejemplo"), el("option", { value: "keyword" }, "palabra clave"));
      const kw = el("input", { "aria-label": `Palabra clave de «${g.text}»`, value: g.text, size: 18, hidden: true });
      mode.addEventListener("change", () => { kw.hidden = mode.value !== "keyword"; });
      const row = el("tr", { "data-testid": `learn-${fate}-${i}` });
      row.append(el("td", {}, el("b", {}, g.text), g.variants.length > 1 ? el("div", { class: "small muted" }, `También: ${g.variants.slice(1).join(" · ")}`) : null,
          g.answers_chosen ? el("div", { class: "small muted" }, `Respuesta elegida por comparación, no transcrita: ${g.answers_chosen} ${g.answers_chosen === 1 ? "vez" : "veces"}`) : null),
        el("td", {}, String(g.count)),
        el("td", {}, pct(g.speech_confidence), el("div", { class: "small muted" }, Object.entries(g.channels).map(([c, n]) => `${c === "voice" ? "teléfono" : c}: ${n}`).join(", "))),
        el("td", {}, g.router_now.intent || "fuera de ámbito", el("div", { class: "small muted" }, pct(g.router_now.confidence))),
        el("td", {}, g.final_intent || "—"),
        el("td", {}, el("ul", { class: "small plain" }, g.contacts.map((c) => el("li", {}, el("a", { href: `/api/v1/traces/${encodeURIComponent(c.trace_id)}`, target: "_blank",
          "aria-label": `Traza del contacto del ${when(c.at)}` }, when(c.at)), ` ${c.outcome || ""}`,
          c.answer_chosen ? el("div", { "data-testid": "answer-chosen" }, chosenText(c.answer_chosen)) : null)))),
        el("td", {}, el("div", { class: "row" }, mode, kw, intent, el("button", { type: "button", "data-testid": `teach-${fate}-${i}`, onclick: () =>
          teach(mode.value === "phrase" ? { intent: intent.value, phrase: g.text } : { intent: intent.value, keyword: kw.value, weight: 0.5 }, row) }, "Añadir"))));
      return row;
    }

    async function load() {
      try {
        const r = await api("GET", `/api/v1/admin/learning?days=${days.value}`);
        content.replaceChildren(el("p", { class: "small muted", "data-testid": "learning-summary" }, `${r.contacts} contactos desde ${when(r.since)}.`),
          ...FATES.map(([fate, title, help]) => el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, `${title} (${r[fate].length})`), el("p", { class: "small muted" }, help),
            r[fate].length ? el("table", { "data-testid": `learning-${fate}` }, el("thead", {}, el("tr", {}, ["Lo que dijeron", "Veces", "Confianza de la voz", "El enrutador ahora", "Acabó en", "Contactos", "Enseñar"].map((h) => el("th", {}, h)))),
              el("tbody", {}, r[fate].map((g, i) => groupRow(g, fate, i)))) : el("p", { class: "muted" }, "Nada en este periodo."))),
          el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, `Confusiones entre intenciones (${r.confusions.length})`),
            el("p", { class: "small muted" }, "El IVR propuso una intención, el ciudadano dijo que no y acabó en otra."),
            r.confusions.length ? el("table", { "data-testid": "learning-confusions" }, el("thead", {}, el("tr", {}, ["Propuso", "Querían", "Veces", "Ejemplos"].map((h) => el("th", {}, h)))),
              el("tbody", {}, r.confusions.map((c) => el("tr", {}, el("td", {}, c.proposed), el("td", {}, c.wanted), el("td", {}, String(c.count)), el("td", {}, c.examples.join(" · ")))))) : el("p", { class: "muted" }, "Ninguna.")));
      } catch (e) { content.replaceChildren(el("p", { class: "error" }, describeError(e))); }
    }
    days.addEventListener("change", load);
    box.append(el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Aprendizaje"),
      el("p", { class: "small muted" }, "Lo que dijeron los ciudadanos por teléfono y chat y el IVR no entendió o tuvo que confirmar. «Añadir» enseña la frase (o una palabra clave) a una intención: crea una versión nueva de las intenciones, comprobada antes con el conjunto de frases; «Deshacer» la revierte."),
      el("div", { class: "row" }, el("label", { for: days.id = "learning-days", style: "margin:0" }, "Periodo"), days), result), content);
    await load();
  }

  Admin.sections.learning = learningSection;
})();
