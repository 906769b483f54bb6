// The desk's softphone: JsSIP (npm, bundled into /static/vendor-jssip.min.js by the build) registers the agent at
// Kamailio over WebSocket with short-lived credentials from the desk session; rtpengine bridges the WebRTC media.
// Agents whose phone is a SIP phone never see it (the credentials endpoint says so).
"use strict";

const Softphone = (() => {
  const { api, el, describeError } = Atiende;
  const STATE = { off: "desconectado", connecting: "conectando…", registered: "preparado", ringing: "sonando",
    incall: "en llamada", held: "en espera", ended: "llamada terminada", failed: "sin conexión" };
  const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"];
  const s = { ua: null, session: null, creds: null, renew: null, muted: false, held: false, offered: null, callId: null,
    remote: null, local: null, meters: [], mic: "", speaker: "" };
  let box, stateLine, callInfo, context, buttons, keypad, audio, devices, micMeter, spkMeter, transferBox, transferTo;

  function setState(name, extra) {
    stateLine.textContent = STATE[name] + (extra ? ` · ${extra}` : "");
    stateLine.dataset.state = name;
    const inCall = name === "incall" || name === "held";
    buttons.answer.hidden = name !== "ringing";
    buttons.reject.hidden = name !== "ringing";
    buttons.hangup.hidden = !inCall;
    buttons.mute.hidden = !inCall;
    buttons.hold.hidden = !inCall;
    keypad.hidden = !inCall;
    transferBox.hidden = !inCall || !s.callId;
  }

  function meter(label) {
    const m = el("meter", { min: 0, max: 1, value: 0, "aria-label": label });
    return m;
  }

  function watchLevel(stream, m) {
    const ctx = new AudioContext();
    const an = ctx.createAnalyser();
    an.fftSize = 512;
    ctx.createMediaStreamSource(stream).connect(an);
    const data = new Float32Array(an.fftSize);
    const tick = () => {
      if (ctx.state === "closed") return;
      an.getFloatTimeDomainData(data);
      let peak = 0;
      for (const v of data) peak = Math.max(peak, Math.abs(v));
      m.value = peak;
      requestAnimationFrame(tick);
    };
    tick();
    s.meters.push(ctx);
  }

  function stopMeters() { s.meters.forEach((c) => c.close()); s.meters = []; micMeter.value = 0; spkMeter.value = 0; }

  async function listDevices() {
    try {
      const all = await navigator.mediaDevices.enumerateDevices();
      const fill = (select, kind, current) => select.replaceChildren(
        el("option", { value: "" }, "Predeterminado"),
        ...all.filter((d) => d.kind === kind).map((d, i) => el("option", { value: d.deviceId, selected: d.deviceId === current },
          d.label || `${kind === "audioinput" ? "Micrófono" : "Altavoz"} ${i + 1}`)));
      fill(devices.mic, "audioinput", s.mic);
      fill(devices.speaker, "audiooutput", s.speaker);
    } catch (e) { /* no devices listed: the defaults are used */ }
  }

  function attach(session) {
    s.session = session;
    const pc = session.connection;
    const onTrack = (ev) => {
      const stream = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
      s.remote = stream;
      audio.srcObject = stream;
      if (s.speaker && audio.setSinkId) audio.setSinkId(s.speaker).catch(() => {});
      audio.play().catch(() => {});
      watchLevel(stream, spkMeter);
    };
    if (pc) pc.addEventListener("track", onTrack);
    session.on("peerconnection", (e) => e.peerconnection.addEventListener("track", onTrack));
    session.on("accepted", () => setState("incall"));
    session.on("confirmed", () => {
      setState("incall");
      const senders = session.connection ? session.connection.getSenders() : [];
      const track = senders.map((x) => x.track).find((t) => t && t.kind === "audio");
      if (track) { s.local = new MediaStream([track]); watchLevel(s.local, micMeter); }
    });
    const done = (e) => {
      setState("ended", e && e.cause ? e.cause : "");
      s.session = null; s.remote = null; s.muted = false; s.held = false; s.callId = null; s.offered = null;
      buttons.mute.textContent = "Silenciar"; buttons.hold.textContent = "Poner en espera";
      stopMeters();
      callInfo.textContent = "";
      context.replaceChildren();
      setTimeout(() => { if (!s.session) setState(s.ua && s.ua.isRegistered() ? "registered" : "off"); }, 1500);
    };
    session.on("ended", done);
    session.on("failed", done);
  }

  function constraints() {
    return { audio: s.mic ? { deviceId: { exact: s.mic } } : true, video: false };
  }

  async function renew() {
    try {
      const fresh = await api("GET", "/api/v1/softphone/credentials");
      s.creds = fresh;
      s.ua.set("authorization_user", fresh.username);
      s.ua.set("password", fresh.password);
      s.ua.register();
    } catch (e) { setState("failed", describeError(e)); }
    schedule();
  }

  function schedule() {
    clearTimeout(s.renew);
    const left = s.creds.expires_at * 1000 - Date.now();
    s.renew = setTimeout(renew, Math.max(10_000, left * 0.7));
  }

  function offline() {
    // Closing the tab: no more calls ring here (the agent becomes unavailable) and the registration ends.
    try { navigator.sendBeacon("/api/v1/softphone/offline"); } catch (e) { /* best effort */ }
    if (s.ua) s.ua.stop();
  }

  async function start() {
    box = document.getElementById("softphone");
    if (!box || typeof JsSIP === "undefined") return;
    try { s.creds = await api("GET", "/api/v1/softphone/credentials"); }
    catch (e) { box.hidden = true; return; }  // a SIP-phone agent, or the softphone is off: nothing to show
    build();
    box.hidden = false;
    setState("connecting");
    const socket = new JsSIP.WebSocketInterface(s.creds.ws_url);
    s.ua = new JsSIP.UA({ sockets: [socket], uri: s.creds.uri, authorization_user: s.creds.username,
      password: s.creds.password, realm: s.creds.realm, register: true, register_expires: 120, session_timers: false,
      user_agent: "Atiende escritorio" });
    s.ua.on("registered", () => { if (!s.session) setState("registered"); });
    s.ua.on("unregistered", () => { if (!s.session) setState("off"); });
    s.ua.on("registrationFailed", (e) => setState("failed", e.cause || ""));
    s.ua.on("disconnected", () => { if (!s.session) setState("failed", "sin conexión con la centralita"); });
    s.ua.on("newRTCSession", (e) => {
      if (e.originator !== "remote") return;
      if (s.session) { e.session.terminate({ status_code: 486 }); return; }
      attach(e.session);
      const from = e.request.from;
      callInfo.textContent = `Llamada de ${from.display_name || from.uri.user || "número oculto"}`
        + (s.offered ? ` · ${s.offered}` : "");
      setState("ringing");
    });
    s.ua.start();
    schedule();
    window.addEventListener("pagehide", offline);
    window.addEventListener("atiende:event", (ev) => {
      const d = ev.detail || {};
      if (d.type === "callback.call" && d.state === "ringing_agent" && d.agent === s.creds.uri.slice(4).split("@")[0]) {
        // The agent asked to call a citizen back: this ring is Atiende calling them first (no transfer: not queued).
        s.callId = null;
        s.offered = "devolución de llamada: conteste y se llamará al ciudadano";
        context.replaceChildren();
        return;
      }
      if (d.type !== "call.offered" || (d.agent && d.agent !== s.creds.uri.slice(4).split("@")[0])) return;
      s.callId = d.call_id || null;
      // What the caller went through before reaching the agent: the IVR's path and what they said.
      s.offered = d.intent ? `motivo: ${d.intent}` : null;
      context.replaceChildren(
        el("p", { class: "small muted" }, `Recorrido: ${(d.path || []).join(" → ") || "—"}`),
        ...(d.transcript || []).map((t) => el("p", { class: "small" }, `«${t}»`)));
    });
    if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) navigator.mediaDevices.addEventListener("devicechange", listDevices);
    listDevices();
  }

  function build() {
    stateLine = el("p", { class: "status-line", "data-testid": "softphone-state", role: "status", "aria-live": "polite" });
    callInfo = el("p", { class: "small", "data-testid": "softphone-caller" });
    context = el("div", { "data-testid": "softphone-context" });
    const b = (label, testid, onclick, cls) => el("button", { "data-testid": testid, class: cls || "", onclick }, label);
    buttons = {
      answer: b("Contestar", "softphone-answer", () => {
        if (!s.session) return;
        s.session.answer({ mediaConstraints: constraints(),
          pcConfig: { iceServers: (s.creds.ice_servers || []).map((u) => ({ urls: u })) } });
      }),
      reject: b("Rechazar", "softphone-reject", () => s.session && s.session.terminate({ status_code: 486 }), "secondary"),
      hangup: b("Colgar", "softphone-hangup", () => s.session && s.session.terminate(), "danger"),
      mute: b("Silenciar", "softphone-mute", () => {
        if (!s.session) return;
        if (s.muted) s.session.unmute({ audio: true }); else s.session.mute({ audio: true });
        s.muted = !s.muted;
        buttons.mute.textContent = s.muted ? "Activar micrófono" : "Silenciar";
        buttons.mute.setAttribute("aria-pressed", String(s.muted));
      }, "secondary"),
      hold: b("Poner en espera", "softphone-hold", () => {
        if (!s.session) return;
        if (s.held) s.session.unhold(); else s.session.hold();
        s.held = !s.held;
        buttons.hold.textContent = s.held ? "Recuperar" : "Poner en espera";
        buttons.hold.setAttribute("aria-pressed", String(s.held));
        setState(s.held ? "held" : "incall");
      }, "secondary"),
    };
    keypad = el("div", { class: "keypad", role: "group", "aria-label": "Teclado" }, KEYS.map((k) =>
      el("button", { class: "secondary", "data-testid": `softphone-key-${k}`, "aria-label": `Tecla ${k}`,
        onclick: () => s.session && s.session.sendDTMF(k, { duration: 120, interToneGap: 70 }) }, k)));
    transferTo = el("select", { "aria-label": "Cola de destino", "data-testid": "softphone-transfer-queue" });
    api("GET", "/api/v1/queues").then((data) => {
      const queues = Array.isArray(data) ? data : (data && data.queues) || [];
      transferTo.replaceChildren(...queues.map((q) => el("option", { value: q.id }, `Cola ${q.id}${q.name ? " · " + q.name : ""}`)));
    }).catch(() => {});
    transferBox = el("div", { class: "row" }, transferTo, b("Transferir", "softphone-transfer", async () => {
      if (!s.callId) return;
      try {
        await api("POST", `/api/v1/calls/${encodeURIComponent(s.callId)}/transfer`, { queue: transferTo.value });
        callInfo.textContent = `Transferida a la cola ${transferTo.value}`;
      } catch (e) { callInfo.textContent = describeError(e); }
    }, "secondary"));
    audio = el("audio", { autoplay: true, "data-testid": "softphone-audio" });
    micMeter = meter("Nivel del micrófono");
    spkMeter = meter("Nivel de la llamada");
    devices = {
      mic: el("select", { "aria-label": "Micrófono", onchange: (e) => { s.mic = e.target.value; } }),
      speaker: el("select", { "aria-label": "Altavoz", onchange: (e) => {
        s.speaker = e.target.value;
        if (audio.setSinkId) audio.setSinkId(s.speaker).catch(() => {});
      } }),
    };
    box.replaceChildren(
      el("h2", { class: "small" }, "Teléfono"),
      stateLine, callInfo, context,
      el("div", { class: "row" }, buttons.answer, buttons.reject, buttons.hangup, buttons.mute, buttons.hold),
      keypad, transferBox,
      el("div", { class: "row small" }, el("span", {}, "Micrófono "), micMeter, el("span", {}, " Llamada "), spkMeter),
      el("div", { class: "row small" }, devices.mic, devices.speaker),
      audio);
  }

  return { start, state: () => s };
})();

Softphone.start();
