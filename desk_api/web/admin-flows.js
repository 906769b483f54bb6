// IVR flows without YAML: a map of the flows, each flow's steps as boxes, each step edited in a form, the API's
// dry-run validation shown on the step as you type, keypad menus and intent routes as tables, and the YAML view
// for power users. The document is edited in place as the API gave it (only the keys its author wrote), so
// YAML -> editor -> YAML leaves it unchanged. Also the simulator tab, which runs the draft before it is saved.
"use strict";

(() => {
  const { api, el, describeError } = Atiende;

  const VERBS = [["say", "Decir"], ["gather", "Preguntar"], ["route", "Enrutar por intención"], ["branch", "Bifurcar (calendario, variable…)"],
    ["answer", "Responder (autoservicio)"], ["enqueue", "Poner en cola"], ["record", "Grabar"], ["voicemail", "Buzón de voz"],
    ["transfer", "Transferir"], ["hangup", "Colgar"], ["goto", "Ir a otro flujo"]];
  const VERB_NAME = Object.fromEntries(VERBS);
  const EXPECTS = [["intent", "qué necesita (intención)"], ["yes_no", "sí o no"], ["reference", "una referencia"], ["town", "una localidad"],
    ["unit", "un organismo"], ["vehicle", "un vehículo"], ["text", "texto libre"], ["digits", "dígitos"]];
  const TOPICS = ["itv", "directory", "offices", "miespacio", "hours", "file_status", "query_status", "complaint", "procedure", "participation"];
  const SWITCHES = ["calendar", "intent", "confidence", "channel"];
  const TERMINAL = new Set(["enqueue", "voicemail", "transfer", "hangup"]);
  const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "*", "#"];

  // ---- the draft shared by the flows, prompts and simulator tabs ------------------------------------------

  const Draft = {
    doc: null, version: null, dirty: false, problems: [], listeners: new Set(), timer: null,
    async load(force) {
      if (this.doc && !force) return;
      const r = await api("GET", "/api/v1/editor/flows");
      this.doc = r.document; this.version = r.version; this.dirty = false;
      await this.validate();
    },
    changed() {
      this.dirty = true;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.validate().catch(() => {}), 250);
      this.emit("edit");
    },
    async validate() {
      const r = await api("POST", "/api/v1/editor/flows/validate", this.doc);
      this.problems = r.problems;
      this.emit("problems");
    },
    emit(what) { for (const f of this.listeners) f(what); },
    on(f) { this.listeners.add(f); return () => this.listeners.delete(f); },
    flowNames() { return Object.keys(this.doc.flows || {}); },
    problemsOf(flow, step) { return this.problems.filter((p) => p.flow === flow && (step === undefined || p.step === step)); },
  };
  Admin.flowsDraft = Draft;

  // The API's sentences, in Spanish for the people who edit the menus.
  function spanish(message) {
    return message
      .replace(/^flows\.([\w-]+)\[(\d+)\](?: \((\w+)\))?(\.[\w.]+)?: /, (m, f, i) => `Paso ${Number(i) + 1} de «${f}»: `)
      .replace(/flow '([^']+)' does not exist/, "el flujo «$1» no existe")
      .replace(/prompt '([^']+)' does not exist/, "el mensaje «$1» no existe")
      .replace(/menu '([^']+)' does not exist/, "el menú «$1» no existe")
      .replace(/^flows (.+) loop without exit: .*/, "Los flujos $1 forman un bucle sin salida: ningún camino llega a colgar, a una cola, al buzón, a una transferencia o al final de un flujo.")
      .replace("say needs exactly one of text or prompt", "«Decir» necesita un texto o un mensaje (uno de los dos)")
      .replace("gather needs a text or a prompt", "«Preguntar» necesita un texto o un mensaje")
      .replace("record needs a text or a prompt", "«Grabar» necesita un texto o un mensaje")
      .replace("the text is empty", "falta el texto: el llamante no oiría nada")
      .replace(/: a key is used twice$/, ": una tecla está repetida")
      .replace("Field required", "falta este campo")
      .replace("Extra inputs are not permitted", "campo desconocido");
  }
  Admin.spanishProblem = spanish;

  function setKey(obj, key, value, dflt) {
    if (value === "" || value === undefined || (value === dflt && !(key in obj))) delete obj[key];
    else obj[key] = value;
  }

  let uid = 0;
  const fid = (p) => `${p}-${++uid}`;

  function labelled(text, control, hint) {
    const id = control.id || (control.id = fid("f"));
    return el("div", { class: "field" }, el("label", { for: id }, text), control, hint ? el("div", { class: "small muted" }, hint) : null);
  }

  function flowSelect(value, { optional, none, label } = {}) {
    const s = el("select", { "aria-label": label || "Flujo" },
      optional ? el("option", { value: "" }, optional) : null,
      none ? el("option", { value: "__none__", selected: value === null }, none) : null,
      Draft.flowNames().map((n) => el("option", { value: n, selected: n === value }, n)));
    if (value && !Draft.flowNames().includes(value)) s.append(el("option", { value, selected: true }, `${value} (no existe)`));
    return s;
  }

  function intentOptions(selected) {
    const ids = new Set([...Object.keys(Draft.doc.labels || {}), ...Object.keys(Draft.doc.routes || {}), ...(Admin.intentIds || [])]);
    return [...ids].map((i) => el("option", { value: i, selected: i === selected }, i));
  }

  // ---- graph: edges as the API computes them (config/flows.py `_edges`) ---------------------------------

  function edgesOf(doc, steps) {
    const out = [];
    const person = doc.person_flow || "person";
    const defaultHandover = doc.policy && "handover" in doc.policy ? doc.policy.handover : "person";
    for (const s of steps || []) {
      if (TERMINAL.has(s.verb)) { if (s.verb === "enqueue" && s.overflow) out.push(s.overflow); return out; }
      if (s.verb === "gather") { const h = s.policy && "handover" in s.policy ? s.policy.handover : (s.policy ? "person" : defaultHandover); if (h) out.push(h); }
      else if (s.verb === "answer") out.push(s.on_fail || person);
      else if (s.verb === "branch") { out.push(...Object.values(s.cases || {})); if (s.default) { out.push(s.default); return out; } }
      else if (s.verb === "route") { out.push(...Object.values({ ...(doc.routes || {}), ...(s.intents || {}) }), s.default || person); return out; }
      else if (s.verb === "goto") { out.push(s.flow); return out; }
    }
    return out;
  }

  function flowMap(selected, select) {
    const doc = Draft.doc, names = Draft.flowNames();
    const edges = Object.fromEntries(names.map((n) => [n, [...new Set(edgesOf(doc, doc.flows[n]))].filter((t) => names.includes(t))]));
    const depth = {}; const queue = [doc.entry_flow || "main"];
    if (names.includes(queue[0])) depth[queue[0]] = 0; else queue.length = 0;
    while (queue.length) { const n = queue.shift(); for (const t of edges[n]) if (!(t in depth)) { depth[t] = depth[n] + 1; queue.push(t); } }
    const maxDepth = Math.max(0, ...Object.values(depth));
    for (const n of names) if (!(n in depth)) depth[n] = maxDepth + 1;  // unreachable: last column
    const cols = {}; const pos = {};
    for (const n of names) { const d = depth[n]; cols[d] = (cols[d] || 0) + 1; pos[n] = [d, cols[d] - 1]; }
    const W = 132, H = 30, GX = 44, GY = 12;
    const width = (Math.max(...Object.keys(cols).map(Number)) + 1) * (W + GX) + 10;
    const height = Math.max(...Object.values(cols)) * (H + GY) + 10;
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`); svg.setAttribute("width", width); svg.setAttribute("class", "flowmap");
    svg.setAttribute("role", "group"); svg.setAttribute("aria-label", "Mapa de flujos: cada caja es un flujo, las flechas son saltos");
    svg.innerHTML = '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#7b8794"/></marker></defs>';
    const xy = (n) => [5 + pos[n][0] * (W + GX), 5 + pos[n][1] * (H + GY)];
    for (const n of names) for (const t of edges[n]) {
      const [x1, y1] = xy(n), [x2, y2] = xy(t);
      const p = document.createElementNS(NS, "path");
      const forward = pos[t][0] > pos[n][0];
      const d = forward ? `M${x1 + W},${y1 + H / 2} C${x1 + W + GX / 2},${y1 + H / 2} ${x2 - GX / 2},${y2 + H / 2} ${x2},${y2 + H / 2}`
        : `M${x1 + W / 2},${y1 + H} C${x1 + W / 2},${y1 + H + 26} ${x2 + W / 2},${y2 + H + 26} ${x2 + W / 2},${y2 + H}`;
      p.setAttribute("d", d); p.setAttribute("class", "edge"); p.setAttribute("marker-end", "url(#arrow)");
      svg.append(p);
    }
    for (const n of names) {
      const [x, y] = xy(n);
      const g = document.createElementNS(NS, "g");
      const bad = Draft.problemsOf(n).length > 0;
      g.setAttribute("class", `node${n === selected ? " sel" : ""}${bad ? " bad" : ""}`);
      g.setAttribute("tabindex", "0"); g.setAttribute("role", "button");
      g.setAttribute("aria-label", `Flujo ${n}${bad ? ", con problemas" : ""}${n === selected ? ", abierto" : ""}`);
      g.setAttribute("data-testid", `flow-node-${n}`);
      const r = document.createElementNS(NS, "rect");
      Object.entries({ x, y, width: W, height: H, rx: 6 }).forEach(([k, v]) => r.setAttribute(k, v));
      const t = document.createElementNS(NS, "text");
      t.setAttribute("x", x + W / 2); t.setAttribute("y", y + H / 2 + 4); t.setAttribute("text-anchor", "middle");
      t.textContent = (bad ? "⚠ " : "") + n;
      g.append(r, t);
      g.addEventListener("click", () => select(n));
      g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(n); } });
      svg.append(g);
    }
    return el("div", { class: "flowmap-box" }, svg);
  }

  // ---- one step: summary and form ---------------------------------------------------------------------

  function textOf(step) { return step.text !== undefined ? step.text : (Draft.doc.prompts || {})[step.prompt]; }

  function summary(step) {
    const t = (x) => (x && x.length > 60 ? `${x.slice(0, 57)}…` : x || "");
    switch (step.verb) {
      case "say": return step.prompt ? `mensaje «${step.prompt}»` : `«${t(step.text)}»`;
      case "gather": return `${step.prompt ? `mensaje «${step.prompt}»` : `«${t(step.text)}»`} · espera ${step.expect || "intent"}${step.menu ? ` · menú ${step.menu}` : ""}`;
      case "route": return `según la intención${step.default ? ` · si no: ${step.default}` : ""}`;
      case "branch": return `según ${step.switch}: ${Object.entries(step.cases || {}).map(([k, v]) => `${k} → ${v}`).join(", ")}${step.default ? ` · si no → ${step.default}` : ""}`;
      case "answer": return `tema ${step.topic}`;
      case "enqueue": return `cola ${step.queue || "N1"}${step.overflow ? ` · desborde → ${step.overflow}` : ""}`;
      case "record": return `«${t(step.text) || step.prompt || ""}»`;
      case "voicemail": return `cola ${step.queue || "N1"}`;
      case "transfer": return step.to || "";
      case "goto": return `→ ${step.flow}`;
      default: return "";
    }
  }

  function listenControls(getText) {
    const audio = el("audio", { controls: true, preload: "none", "data-testid": "listen-audio", "aria-label": "Audio del mensaje" });
    const duration = el("span", { class: "small muted", "data-testid": "listen-duration", "aria-live": "polite" });
    audio.addEventListener("loadedmetadata", () => { duration.textContent = `${audio.duration.toFixed(1).replace(".", ",")} s`; });
    audio.addEventListener("error", () => { duration.textContent = "no se pudo generar el audio"; });
    const button = el("button", { class: "secondary", type: "button", "data-testid": "listen", onclick: () => {
      const text = getText();
      if (!text || !text.trim()) { duration.textContent = "no hay texto"; return; }
      duration.textContent = "generando…";
      audio.src = `/api/v1/editor/prompts/audio?text=${encodeURIComponent(text)}`;
      audio.load();
      audio.play().catch(() => {});  // headless browsers without audio output still load it
    } }, "▶ Escuchar");
    return el("div", { class: "row listen" }, button, audio, duration);
  }
  Admin.listenControls = listenControls;

  function sayOrPrompt(step, onChange) {
    const prompts = Object.keys(Draft.doc.prompts || {});
    const which = el("select", { "data-field": "prompt" }, el("option", { value: "" }, "(texto escrito aquí)"),
      prompts.map((p) => el("option", { value: p, selected: p === step.prompt }, p)));
    const text = el("textarea", { "data-field": "text", rows: 3 });
    text.value = step.text || "";
    const shown = el("p", { class: "small muted" });
    const sync = () => {
      text.disabled = !!step.prompt;
      shown.textContent = step.prompt ? `Dice: «${(Draft.doc.prompts || {})[step.prompt] || "(el mensaje no existe)"}»` : "";
    };
    which.addEventListener("change", () => {
      if (which.value) { delete step.text; step.prompt = which.value; }
      else { const was = (Draft.doc.prompts || {})[step.prompt] || ""; delete step.prompt; step.text = was; text.value = was; }
      sync(); onChange();
    });
    text.addEventListener("input", () => { step.text = text.value; onChange(); });
    sync();
    return [labelled("Mensaje", which, "Un mensaje con nombre (pestaña «Mensajes») o un texto propio de este paso."),
      labelled("Texto", text, "Puede usar {hours}, {next_open}, {line_name}, {institution}, {today}, {closed_reason}."), shown,
      listenControls(() => textOf(step))];
  }

  function input(step, key, label, { type = "text", dflt, hint, min, max, stepSize, placeholder } = {}, onChange) {
    const i = el("input", { type, "data-field": key, min, max, step: stepSize, placeholder: placeholder ?? (dflt !== undefined ? String(dflt) : null) });
    i.value = step[key] ?? "";
    i.addEventListener("input", () => { setKey(step, key, type === "number" ? (i.value === "" ? "" : Number(i.value)) : i.value, undefined); onChange(); });
    return labelled(label, i, hint);
  }

  function check(step, key, label, dflt, onChange) {
    const c = el("input", { type: "checkbox", "data-field": key, checked: key in step ? !!step[key] : dflt });
    c.addEventListener("change", () => { setKey(step, key, c.checked, dflt); onChange(); });
    const id = c.id = fid("c");
    return el("div", { class: "field row" }, c, el("label", { for: id, style: "margin:0;font-weight:normal" }, label));
  }

  function flowField(step, key, label, opts, onChange) {
    const s = flowSelect(step[key], { ...opts, label });
    s.dataset.field = key;
    s.addEventListener("change", () => { setKey(step, key, s.value === "__none__" ? null : s.value, undefined); onChange(true); });
    return labelled(label, s);
  }

  function mapRows(obj, keyLabel, keyInput, onChange, addLabel) {
    // value -> flow rows (branch cases, route intents)
    const box = el("div", { class: "maprows" });
    const render = () => {
      box.replaceChildren(...Object.entries(obj).map(([k, v]) => {
        const s = flowSelect(v, { label: `${keyLabel} ${k}: flujo` });
        s.addEventListener("change", () => { obj[k] = s.value; onChange(true); });
        return el("div", { class: "row" }, el("code", {}, k), "→", s,
          el("button", { type: "button", class: "secondary", "aria-label": `Quitar ${keyLabel} ${k}`, onclick: () => { delete obj[k]; render(); onChange(true); } }, "Quitar"));
      }));
      const k = keyInput();
      const f = flowSelect(null, { label: `Flujo del nuevo ${keyLabel}` });
      box.append(el("div", { class: "row" }, k, "→", f, el("button", { type: "button", class: "secondary", onclick: () => {
        const key = k.value.trim();
        if (!key) return;
        obj[key] = f.value; render(); onChange(true);
      } }, addLabel)));
    };
    render();
    return box;
  }

  function policyFields(step, onChange) {
    const box = el("div", {});
    const own = el("input", { type: "checkbox", "data-field": "policy", checked: !!step.policy });
    own.id = fid("c");
    const render = () => {
      box.replaceChildren();
      if (!step.policy) { box.append(el("p", { class: "small muted" }, "Usa la política general del documento.")); return; }
      const p = step.policy;
      const num = (k, label, dflt) => input(p, k, label, { type: "number", dflt, min: 0, max: 5 }, () => onChange());
      const slider = (k, label, dflt) => {
        const r = el("input", { type: "range", min: 0, max: 1, step: 0.05, "data-field": `policy.${k}` });
        r.value = p[k] ?? dflt;
        const out = el("output", {}, Number(r.value).toFixed(2));
        r.addEventListener("input", () => { p[k] = Number(r.value); out.textContent = Number(r.value).toFixed(2); onChange(); });
        return el("div", { class: "field" }, el("label", { for: r.id = fid("r") }, label), el("div", { class: "row" }, r, out));
      };
      const h = flowSelect("handover" in p ? p.handover : "", { optional: "(por defecto: person)", none: "(ninguno: seguir)", label: "Si todo falla, ir a" });
      h.addEventListener("change", () => { setKey(p, "handover", h.value === "__none__" ? null : h.value, undefined); onChange(true); });
      box.append(el("div", { class: "grid2" }, num("no_input_retries", "Reintentos si no oye nada", 2), num("no_match_retries", "Reintentos si no entiende", 1),
        slider("confirm_below", "Confirmar si la confianza es menor que", 0.6), slider("stt_confirm_below", "Confirmar si el reconocimiento de voz es menor que", 0.45),
        check(p, "dtmf_fallback", "Ofrecer el teclado si la voz falla", true, onChange), num("dtmf_retries", "Reintentos con teclado", 1),
        labelled("Si todo falla, ir a", h)));
    };
    own.addEventListener("change", () => { if (own.checked) step.policy = {}; else delete step.policy; render(); onChange(); });
    render();
    return el("fieldset", {}, el("legend", {}, "Reconocimiento"),
      el("div", { class: "row" }, own, el("label", { for: own.id, style: "margin:0;font-weight:normal" }, "Política propia de este paso")), box);
  }

  function stepForm(step, onChange) {
    const f = [];
    const ch = (structural) => onChange(structural);
    switch (step.verb) {
      case "say": f.push(...sayOrPrompt(step, ch), check(step, "barge_in", "El llamante puede interrumpir", true, ch)); break;
      case "gather": {
        f.push(...sayOrPrompt(step, ch));
        const ex = el("select", { "data-field": "expect" }, EXPECTS.map(([v, l]) => el("option", { value: v, selected: (step.expect || "intent") === v }, l)));
        ex.addEventListener("change", () => { setKey(step, "expect", ex.value, "intent"); ch(); });
        const menu = el("select", { "data-field": "menu" }, el("option", { value: "" }, "(ninguno)"),
          Object.keys(Draft.doc.menus || {}).map((m) => el("option", { value: m, selected: m === step.menu }, m)));
        menu.addEventListener("change", () => { setKey(step, "menu", menu.value, undefined); ch(); });
        const inputs = el("div", { class: "row" }, ["speech", "dtmf"].flatMap((k) => {
          const c = el("input", { type: "checkbox", checked: (step.input || ["speech", "dtmf"]).includes(k) });
          c.id = fid("c");
          c.addEventListener("change", () => {
            const now = new Set(step.input || ["speech", "dtmf"]);
            if (c.checked) now.add(k); else now.delete(k);
            step.input = ["speech", "dtmf"].filter((x) => now.has(x)); ch();
          });
          return [c, el("label", { for: c.id, style: "margin:0 .8rem 0 0;font-weight:normal" }, k === "speech" ? "voz" : "teclado")];
        }));
        f.push(labelled("Espera", ex), labelled("Menú de teclado", menu, "Opciones por tecla y el menú de respaldo si la voz falla."),
          el("fieldset", {}, el("legend", {}, "Acepta"), inputs),
          input(step, "into", "Guardar la respuesta en la variable", { placeholder: step.expect || "intent" }, ch),
          input(step, "timeout_s", "Segundos de espera", { type: "number", dflt: 6, min: 1, max: 60 }, ch),
          policyFields(step, ch));
        break;
      }
      case "route": {
        // Only a change writes the key: viewing a step must leave the document as its author wrote it.
        const intents = step.intents || {};
        const chIntents = (structural) => { step.intents = intents; ch(structural); };
        f.push(el("p", { class: "small muted" }, "Lleva cada intención a su flujo según la tabla «Adónde lleva cada intención»; aquí puede cambiarlo solo para este paso."),
          mapRows(intents, "intención", () => el("select", { "aria-label": "Nueva intención" }, intentOptions()), chIntents, "Añadir excepción"),
          flowField(step, "default", "Cualquier otra intención va a", { optional: "(por defecto: person)" }, ch));
        break;
      }
      case "branch": {
        const sw = el("input", { "data-field": "switch", list: "switches" });
        sw.value = step.switch || "";
        sw.addEventListener("input", () => { step.switch = sw.value; ch(); });
        const cases = step.cases || {};
        const chCases = (structural) => { step.cases = cases; ch(structural); };
        f.push(labelled("Según", sw, "calendar (open, closed, holiday), intent, confidence (high, low), channel, o una variable."),
          el("datalist", { id: "switches" }, SWITCHES.map((x) => el("option", { value: x }))),
          el("h4", {}, "Casos"),
          mapRows(cases, "caso", () => el("input", { placeholder: "valor (p. ej. closed)", "aria-label": "Valor del nuevo caso" }), chCases, "Añadir caso"),
          flowField(step, "default", "Si ningún caso coincide", { optional: "(seguir con el paso siguiente)" }, ch));
        break;
      }
      case "answer": {
        const t = el("select", { "data-field": "topic" }, TOPICS.map((x) => el("option", { value: x, selected: x === step.topic }, x)));
        t.addEventListener("change", () => { step.topic = t.value; ch(); });
        f.push(labelled("Tema", t), flowField(step, "on_fail", "Si no hay respuesta, ir a", { optional: "(por defecto: person)" }, ch));
        break;
      }
      case "enqueue":
        f.push(input(step, "queue", "Cola", { dflt: "N1" }, ch), check(step, "announce", "Anunciar la posición", true, ch),
          input(step, "overflow_after_s", "Desbordar tras (s)", { type: "number", dflt: 300, min: 1, max: 3600 }, ch),
          flowField(step, "overflow", "Al desbordar, ir a", { optional: "(nada: seguir esperando)" }, ch));
        break;
      case "record": f.push(...sayOrPrompt(step, ch), input(step, "into", "Variable", { dflt: "recording" }, ch),
        input(step, "max_s", "Duración máxima (s)", { type: "number", dflt: 60, min: 1, max: 600 }, ch)); break;
      case "voicemail": f.push(input(step, "queue", "Cola del ticket", { dflt: "N1" }, ch)); break;
      case "transfer": f.push(input(step, "to", "Destino SIP", { placeholder: "sip:centralita@ejemplo.es" }, ch)); break;
      case "goto": f.push(flowField(step, "flow", "Flujo", {}, ch)); break;
      default: break;
    }
    f.push(input(step, "id", "Nombre del paso (opcional)", { hint: "Aparece en el recorrido de la llamada." }, ch));
    return f;
  }

  // ---- the flows tab ----------------------------------------------------------------------------------

  function saveBar(onSaved) {
    const note = el("input", { placeholder: "Nota del cambio (opcional)", "aria-label": "Nota del cambio", "data-testid": "flows-note", style: "flex:1" });
    const result = el("div", { class: "status-line", role: "status", "data-testid": "flows-result" });
    const state = el("span", { class: "small", "data-testid": "flows-state" });
    const refresh = () => {
      const n = Draft.problems.length;
      state.className = `small ${n ? "error" : "ok"}`;
      state.textContent = `${Draft.dirty ? "Cambios sin guardar" : `Versión ${Draft.version} en uso`} · ${n ? `${n} problema(s)` : "sin problemas"}`;
    };
    const off = Draft.on(refresh);
    refresh();
    const save = el("button", { "data-testid": "flows-save", onclick: async () => {
      result.className = "status-line muted"; result.textContent = "Guardando…";
      try {
        if (Admin.isAdmin) {
          const note_ = note.value.trim();
          const q = new URLSearchParams();
          if (note_) q.set("note", note_);
          if (Number.isInteger(Draft.version)) q.set("base", String(Draft.version));  // refused (409) if another was saved
          const r = await api("PUT", `/api/v1/admin/ivr/flows${q.size ? `?${q}` : ""}`, Draft.doc);
          await Draft.load(true);
          result.className = "status-line ok"; result.textContent = `Guardada la versión ${r.version}. Ya está en uso.`;
        } else {
          const r = await api("POST", "/api/v1/editor/drafts/ivr", { document: Draft.doc, note: note.value.trim() });
          result.className = "status-line ok"; result.textContent = `Borrador ${r.id} enviado: un administrador lo revisará y lo publicará.`;
        }
        note.value = "";
        if (onSaved) onSaved();
      } catch (e) { result.className = "status-line error"; result.replaceChildren(Admin.issuesList(e)); }
    } }, Admin.isAdmin ? "Guardar nueva versión" : "Proponer borrador");
    const discard = el("button", { class: "secondary", onclick: async () => { await Draft.load(true); if (onSaved) onSaved(); } }, "Descartar cambios");
    return { node: el("section", { class: "panel savebar" }, el("div", { class: "row" }, state), el("div", { class: "row" }, note, save, discard), result), off };
  }

  async function flowsSection(box) {
    await Draft.load();
    if (!Admin.intentIds) {
      try { Admin.intentIds = ((await api("GET", "/api/v1/editor/routing")).document.intents || []).map((i) => i.id); } catch (e) { Admin.intentIds = []; }
    }
    let flow = Draft.doc.entry_flow && Draft.doc.flows[Draft.doc.entry_flow] ? Draft.doc.entry_flow : Draft.flowNames()[0];
    let index = 0;
    const mapBox = el("div");
    const stepsBox = el("div", { class: "panel steps" });
    const formBox = el("div", { class: "panel stepform", "data-testid": "step-form" });
    const docBox = el("div");
    const summaryBox = el("div", { role: "status", "aria-live": "polite", "data-testid": "flows-problems" });
    const bar = saveBar(() => renderAll());

    function select(name, i = 0) { flow = name; index = i; renderAll(); }

    function renderMap() { mapBox.replaceChildren(flowMap(flow, (n) => select(n))); }

    function renderSteps() {
      const steps = Draft.doc.flows[flow] || [];
      const list = el("ol", { class: "flow-steps", "aria-label": `Pasos del flujo ${flow}` }, steps.map((s, i) => {
        const bad = Draft.problemsOf(flow, i).length > 0;
        return el("li", {}, el("button", { type: "button", class: `step${i === index ? " sel" : ""}${bad ? " bad" : ""}`, "data-testid": `step-${flow}-${i}`,
          "aria-pressed": i === index ? "true" : "false", onclick: () => { index = i; renderSteps(); renderForm(); } },
          el("b", {}, `${i + 1}. ${VERB_NAME[s.verb] || s.verb}`), bad ? " ⚠" : "", el("br"), el("span", { class: "small" }, summary(s))));
      }));
      const verb = el("select", { "aria-label": "Tipo de paso nuevo", "data-testid": "step-add-verb" }, VERBS.map(([v, l]) => el("option", { value: v }, l)));
      const add = el("button", { type: "button", "data-testid": "step-add", onclick: () => {
        const v = verb.value;
        const fresh = { verb: v };
        if (v === "say") fresh.text = "";
        if (v === "gather") { fresh.text = ""; fresh.expect = "intent"; }
        if (v === "branch") { fresh.switch = "calendar"; fresh.cases = {}; }
        if (v === "answer") fresh.topic = "hours";
        if (v === "goto") fresh.flow = Draft.doc.entry_flow || "main";
        if (v === "transfer") fresh.to = "sip:";
        if (v === "record") fresh.text = "";
        steps.splice(steps.length ? index + 1 : 0, 0, fresh);
        index = steps.length === 1 ? 0 : index + 1;
        Draft.changed(); renderAll();
      } }, "Añadir paso después del seleccionado");
      const name = el("input", { placeholder: "nombre_del_flujo", "aria-label": "Nombre del flujo nuevo", "data-testid": "flow-new-name", pattern: "[a-z0-9_]+" });
      const newFlow = el("button", { type: "button", class: "secondary", "data-testid": "flow-new", onclick: () => {
        const n = name.value.trim().toLowerCase().replace(/[^a-z0-9_]+/g, "_");
        if (!n || Draft.doc.flows[n]) { name.setAttribute("aria-invalid", "true"); return; }
        Draft.doc.flows[n] = [{ verb: "say", text: "" }, { verb: "hangup" }];
        Draft.changed(); select(n, 0);
      } }, "Nuevo flujo");
      const delFlow = el("button", { type: "button", class: "danger", "data-testid": "flow-delete", onclick: () => {
        if (!confirm(`¿Quitar el flujo «${flow}»? Los pasos que lleven a él mostrarán un problema.`)) return;
        delete Draft.doc.flows[flow];
        Draft.changed(); select(Draft.flowNames()[0]);
      } }, "Quitar este flujo");
      stepsBox.replaceChildren(el("h3", { style: "margin-top:0" }, `Flujo «${flow}»`), list,
        el("div", { class: "row" }, verb, add), el("hr"), el("div", { class: "row" }, name, newFlow, delFlow));
    }

    function problemsList(flowName, i) {
      const ps = Draft.problemsOf(flowName, i);
      return el("ul", { class: "issues", "data-testid": "step-problems" }, ps.map((p) => el("li", {}, spanish(p.message))));
    }

    let problemsSlot = null;
    function renderForm() {
      const steps = Draft.doc.flows[flow] || [];
      const step = steps[index];
      if (!step) { formBox.replaceChildren(el("p", { class: "muted" }, "Este flujo no tiene pasos: añada uno.")); problemsSlot = null; return; }
      // The step list shows each step's summary: rebuild it (the form, where the cursor is, stays as it is).
      const onChange = (structural) => { Draft.changed(); refreshSummary(); renderSteps(); if (structural) { renderMap(); } };
      problemsSlot = el("div", { role: "status", "aria-live": "polite" }, problemsList(flow, index));
      const move = (d) => { const j = index + d; if (j < 0 || j >= steps.length) return; [steps[index], steps[j]] = [steps[j], steps[index]]; index = j; Draft.changed(); renderAll(); };
      const verb = el("select", { "aria-label": "Tipo de paso", "data-field": "verb" }, VERBS.map(([v, l]) => el("option", { value: v, selected: v === step.verb }, l)));
      verb.addEventListener("change", () => { steps[index] = { verb: verb.value, ...(step.id ? { id: step.id } : {}) }; Draft.changed(); renderAll(); });
      formBox.replaceChildren(
        el("div", { class: "row" }, el("h3", { style: "margin:0" }, `Paso ${index + 1}`), verb,
          el("button", { type: "button", class: "secondary", "aria-label": "Subir el paso", "data-testid": "step-up", onclick: () => move(-1) }, "↑"),
          el("button", { type: "button", class: "secondary", "aria-label": "Bajar el paso", "data-testid": "step-down", onclick: () => move(1) }, "↓"),
          el("button", { type: "button", class: "danger", "data-testid": "step-delete", onclick: () => { steps.splice(index, 1); index = Math.max(0, index - 1); Draft.changed(); renderAll(); } }, "Quitar paso")),
        problemsSlot, ...stepForm(step, onChange));
    }

    function refreshSummary() {
      const n = Draft.problems.length;
      summaryBox.replaceChildren(n ? el("div", { class: "status-line error" }, `${n} problema(s): `,
        el("ul", { class: "issues" }, Draft.problems.slice(0, 12).map((p) => el("li", {}, p.flow ? el("button", { type: "button", class: "linkish",
          onclick: () => select(p.flow, p.step || 0) }, spanish(p.message)) : spanish(p.message))))) : el("div", { class: "status-line ok" }, "Sin problemas: se puede guardar."));
    }

    function onProblems(what) {
      if (what !== "problems") return;
      refreshSummary(); renderMap();
      if (problemsSlot) problemsSlot.replaceChildren(problemsList(flow, index));
      for (const b of stepsBox.querySelectorAll("button.step")) {
        const i = Number(b.dataset.testid.split("-").pop());
        b.classList.toggle("bad", Draft.problemsOf(flow, i).length > 0);
      }
    }

    function renderDoc() {
      const doc = Draft.doc;
      // Tables write their key only when something changes (the document stays as written until then).
      const table = (k) => (doc[k] = doc[k] || {});
      const view = { routes: doc.routes || {}, labels: doc.labels || {}, menus: doc.menus || {} };
      const special = ["entry_flow", "person_flow", "closed_flow"].map((k) => {
        const s = flowSelect(doc[k], { label: k });
        s.addEventListener("change", () => { doc[k] = s.value; Draft.changed(); renderMap(); });
        return labelled({ entry_flow: "Flujo de entrada", person_flow: "Pasar con una persona", closed_flow: "Fuera de horario" }[k], s);
      });
      const routes = el("table", { "data-testid": "routes-table" }, el("thead", {}, el("tr", {}, el("th", {}, "Intención"), el("th", {}, "Cómo se nombra en los mensajes"), el("th", {}, "Lleva al flujo"))),
        el("tbody", {}, [...new Set([...Object.keys(view.routes), ...Object.keys(view.labels), ...(Admin.intentIds || [])])].map((i) => {
          const s = flowSelect(view.routes[i], { optional: "(por defecto: person)", label: `Flujo de ${i}` });
          s.dataset.testid = `route-${i}`;
          s.addEventListener("change", () => { setKey(table("routes"), i, s.value, undefined); Draft.changed(); renderMap(); });
          const lab = el("input", { "aria-label": `Cómo se nombra ${i}`, value: view.labels[i] || "", size: 40 });
          lab.addEventListener("input", () => { setKey(table("labels"), i, lab.value, undefined); Draft.changed(); });
          return el("tr", {}, el("td", {}, el("code", {}, i)), el("td", {}, lab), el("td", {}, s));
        })));
      const menus = Object.entries(view.menus).map(([m, options]) => {
        const key = el("select", { "aria-label": `Tecla nueva del menú ${m}`, "data-testid": `menu-add-key-${m}` },
          KEYS.filter((k) => !options.some((o) => o.key === k)).map((k) => el("option", { value: k }, k)));
        const intent = el("select", { "aria-label": `Intención de la tecla nueva del menú ${m}`, "data-testid": `menu-add-intent-${m}` }, intentOptions());
        return el("div", { class: "menu" }, el("h4", {}, `Menú «${m}»`),
          el("table", { "data-testid": `menu-${m}` }, el("thead", {}, el("tr", {}, el("th", {}, "Tecla"), el("th", {}, "Intención"), el("th", {}, ""))),
            el("tbody", {}, options.map((o, i) => {
              const s = el("select", { "aria-label": `Intención de la tecla ${o.key}` }, intentOptions(o.intent));
              s.addEventListener("change", () => { o.intent = s.value; Draft.changed(); });
              return el("tr", {}, el("td", {}, el("b", {}, o.key)), el("td", {}, s), el("td", {}, el("button", { type: "button", class: "secondary", "aria-label": `Quitar la tecla ${o.key}`,
                onclick: () => { options.splice(i, 1); Draft.changed(); renderDoc(); } }, "Quitar")));
            }))),
          el("div", { class: "row" }, key, intent, el("button", { type: "button", "data-testid": `menu-add-${m}`, onclick: () => {
            if (!key.value) return;
            options.push({ key: key.value, intent: intent.value }); Draft.changed(); renderDoc();
          } }, "Añadir opción")));
      });
      docBox.replaceChildren(el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Flujos especiales"), el("div", { class: "grid3" }, special)),
        el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Adónde lleva cada intención"),
          el("p", { class: "small muted" }, "Después de la pregunta principal, cada intención va a su flujo (pasos «Enrutar por intención»)."), routes),
        el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Menús de teclado"), menus));
    }

    function yamlView() {
      const area = el("textarea", { class: "code", spellcheck: "false", "data-testid": "flows-yaml-text", "aria-label": "Flujos en YAML" });
      const status = el("div", { class: "status-line", role: "status", "data-testid": "flows-yaml-status" });
      const details = el("details", { "data-testid": "flows-yaml" }, el("summary", {}, "Ver y editar en YAML (usuarios avanzados)"),
        el("p", { class: "small muted" }, "El mismo documento que el editor. «Aplicar» lo carga en el editor; después guarde como siempre."),
        area, el("div", { class: "row" }, el("button", { type: "button", "data-testid": "flows-yaml-apply", onclick: async () => {
          try {
            Draft.doc = await Admin.fromYaml(area.value); Draft.changed(); status.className = "status-line ok"; status.textContent = "YAML aplicado al editor.";
            if (!Draft.doc.flows[flow]) flow = Draft.flowNames()[0];
            index = 0; renderMap(); renderSteps(); renderForm(); renderDoc();
          } catch (e) { status.className = "status-line error"; status.textContent = describeError(e); }
        } }, "Aplicar YAML al editor"), el("button", { type: "button", class: "secondary", onclick: async () => { area.value = await Admin.toYaml(Draft.doc); } }, "Recargar desde el editor")),
        status);
      details.addEventListener("toggle", async () => { if (details.open) area.value = await Admin.toYaml(Draft.doc); });
      return el("section", { class: "panel" }, details);
    }

    function renderAll() { renderMap(); renderSteps(); renderForm(); renderDoc(); refreshSummary(); }

    const off = Draft.on(onProblems);
    // Stop listening to the draft once another tab replaced this one.
    const observer = new MutationObserver(() => { if (!document.body.contains(stepsBox)) { off(); bar.off(); observer.disconnect(); } });
    observer.observe(document.getElementById("section"), { childList: true });
    box.append(bar.node, el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Mapa de flujos"),
      el("p", { class: "small muted" }, "Pulse un flujo para ver y editar sus pasos. Las flechas son saltos (ir a, enrutar, bifurcar, desbordar)."), mapBox, summaryBox),
    el("div", { class: "grid flows-grid" }, stepsBox, formBox), docBox, yamlView());
    renderAll();
  }

  // ---- the simulator tab -------------------------------------------------------------------------------

  async function simulatorSection(box) {
    await Draft.load();
    const inputs = [];
    const at = el("input", { type: "datetime-local", "data-testid": "sim-at", "aria-label": "Instante de la llamada (vacío: ahora)" });
    const channel = el("select", { "data-testid": "sim-channel", "aria-label": "Canal" }, el("option", { value: "voice" }, "Teléfono"), el("option", { value: "chat" }, "Chat"));
    const useDraft = el("input", { type: "checkbox", checked: true, "data-testid": "sim-draft" });
    useDraft.id = fid("c");
    const say = el("input", { placeholder: "Lo que dice el ciudadano…", "data-testid": "sim-say", "aria-label": "Lo que dice el ciudadano", style: "flex:1" });
    const log = el("ol", { class: "trace", "data-testid": "sim-log", "aria-live": "polite" });
    const info = el("div", { class: "status-line", "data-testid": "sim-result", role: "status" });
    const path = el("p", { class: "small", "data-testid": "sim-path" });

    let latest = 0;  // runs overlap (a key pressed before the last answer came back): only the newest is shown
    async function run() {
      const mine = ++latest;
      const body = { inputs: [...inputs], channel: channel.value, stop_when_waiting: true };
      if (at.value) body.at = at.value;
      if (useDraft.checked) {
        body.flows = Draft.doc;
        if (Admin.routingDraft && Admin.routingDraft.dirty) body.routing = Admin.routingDraft.doc;
      }
      try {
        const r = await api("POST", "/api/v1/simulate", body);
        if (mine !== latest) return;
        let k = 0;
        const items = [];
        for (const m of r.messages) {
          items.push(el("li", { class: "out" }, el("div", { class: "meta" }, m.kind === "question" ? "IVR (pregunta)" : "IVR"), el("div", { class: "text" }, m.text),
            m.options && m.options.length ? el("div", { class: "small muted" }, m.options.map((o) => `${o.key}: ${o.label}`).join(" · ")) : null));
          if (m.kind === "question" && k < body.inputs.length) {
            const x = body.inputs[k++];
            items.push(el("li", { class: "in" }, el("div", { class: "meta" }, "Ciudadano"), el("div", { class: "text" }, x.say !== undefined ? x.say : `tecla ${x.dtmf}`)));
          }
        }
        log.replaceChildren(...items);
        info.className = "status-line ok";
        info.textContent = `${r.waiting ? "Esperando respuesta" : `Terminado: ${r.outcome || "—"}`} · intención: ${r.intent || "ninguna"}`
          + ` (confianza ${Math.round((r.confidence || 0) * 100)} %) · calendario: ${r.calendar}${r.draft ? " · con el borrador" : " · versión en uso"}`;
        path.textContent = `Recorrido: ${r.path.map((p) => `${p.flow}[${p.index + 1}] ${p.verb}${p.detail && p.detail.value !== undefined ? `=${p.detail.value}` : ""}`).join(" → ")}`;
      } catch (e) { if (mine === latest) { info.className = "status-line error"; info.replaceChildren(Admin.issuesList(e)); } }
    }

    const send = () => { if (!say.value.trim()) return; inputs.push({ say: say.value.trim() }); say.value = ""; run(); };
    say.addEventListener("keydown", (e) => { if (e.key === "Enter") send(); });
    const keypad = el("div", { class: "keypad", role: "group", "aria-label": "Teclado" }, KEYS.map((k) =>
      el("button", { type: "button", class: "secondary", "data-testid": `sim-key-${k}`, "aria-label": `Tecla ${k}`, onclick: () => { inputs.push({ dtmf: k }); run(); } }, k)));
    box.append(el("section", { class: "panel" }, el("h3", { style: "margin-top:0" }, "Simulador"),
      el("p", { class: "small muted" }, "Pruebe los flujos como lo haría un ciudadano, paso a paso, con el borrador sin guardar (o con la versión en uso). No se guarda nada ni se crean tickets."),
      el("div", { class: "row" }, labelled("Instante", at, "Vacío: ahora."), labelled("Canal", channel),
        el("div", { class: "row" }, useDraft, el("label", { for: useDraft.id, style: "margin:0;font-weight:normal" }, "Usar el borrador del editor")),
        el("button", { type: "button", "data-testid": "sim-start", onclick: () => { inputs.length = 0; run(); } }, "Empezar de nuevo")),
      log, el("div", { class: "row" }, say, el("button", { type: "button", "data-testid": "sim-send", onclick: send }, "Decir")), keypad, info, path));
    await run();
  }

  Admin.flowsSaveBar = saveBar;
  Admin.sections.flows = flowsSection;
  Admin.sections.simulator = simulatorSection;
})();
