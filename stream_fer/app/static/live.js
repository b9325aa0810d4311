// stream-fer live view. The camera plays in the page's own <video>; small JPEG frames (320 px wide, the
// unmirrored image) go up a websocket, at most two unanswered at a time, so only fresh frames are
// analysed; each answer is a compact JSON result, and the overlay (box, label, bars, attention map, AU
// regions with FACS names, trust cue) and the side panels are drawn here from that one result.
// The preview is mirrored like a mirror; the overlay is drawn mirrored to match, text kept readable.
(() => {
  "use strict";
  const SEND_WIDTH = 320;
  const JPEG_QUALITY = 0.7;
  const MAX_IN_FLIGHT = 2;
  const LIVE_PATH = "/stream-fer/live";
  const WATCH_PATH = "/stream-fer/rtsp-watch";

  // A small approximation of the turbo colour map (as the server's renderer uses), 0..1 -> [r, g, b].
  const TURBO = [[48, 18, 59], [70, 107, 227], [40, 188, 235], [50, 241, 152], [164, 252, 59],
                 [238, 207, 58], [251, 128, 34], [208, 47, 5], [122, 4, 3]];
  function turbo(v) {
    const x = Math.min(0.9999, Math.max(0, v)) * (TURBO.length - 1);
    const i = Math.floor(x), f = x - i, a = TURBO[i], b = TURBO[i + 1];
    return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
  }

  function mul(m, n) {  // 2x3 affine matrices [a, b, c, d, e, f] as x' = a x + b y + c, y' = d x + e y + f
    return [m[0] * n[0] + m[1] * n[3], m[0] * n[1] + m[1] * n[4], m[0] * n[2] + m[1] * n[5] + m[2],
            m[3] * n[0] + m[4] * n[3], m[3] * n[1] + m[4] * n[4], m[3] * n[2] + m[4] * n[5] + m[5]];
  }
  function apply(m, x, y) { return [m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]]; }
  function setTransform(ctx, m) { ctx.setTransform(m[0], m[3], m[1], m[4], m[2], m[5]); }
  function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }

  class LiveView {
    constructor(root) {
      this.root = root;
      this.video = root.querySelector("video");
      this.remote = root.dataset.mode === "rtsp";  // frames come from the server (RTSP), not a camera
      this.frame = root.querySelector("canvas.sf-frame");
      this.images = new Map();
      this.canvas = root.querySelector("canvas.sf-overlay");
      this.button = root.querySelector("button.sf-start");
      this.statusLine = root.querySelector(".sf-status");
      this.panels = root.querySelector(".sf-panels");
      this.grab = document.createElement("canvas");
      this.heat = document.createElement("canvas");
      this.running = false;
      this.stats = {sent: 0, results: 0, drawn: 0, dropped: 0, errors: 0};
      this.last = null;
      this.pending = new Set();
      this.nextId = 0;
      this.overlays = null;
      this.settings = "";
    }

    async start() {
      if (this.running) return;
      this.running = true;
      this.button.textContent = "Stop live analysis";
      this.status("Starting the camera…");
      try {
        this.stream = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: false});
      } catch (err) {
        this.stop(`No camera: ${err.message || err}`);
        return;
      }
      this.video.srcObject = this.stream;
      await this.video.play().catch(() => {});
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      this.ws = new WebSocket(`${proto}//${location.host}${LIVE_PATH}`);
      this.ws.binaryType = "arraybuffer";
      this.ws.onopen = () => { this.sendSettings(true); this.status("Live: analysing the newest camera frame."); };
      this.ws.onmessage = (ev) => this.onMessage(ev.data);
      this.ws.onclose = () => { if (this.running) this.stop(this.error || "The connection closed."); };
      this.settingsTimer = setInterval(() => this.sendSettings(false), 1000);
      const onFrame = () => {
        if (!this.running) return;
        this.capture();
        this.video.requestVideoFrameCallback(onFrame);
      };
      this.video.requestVideoFrameCallback(onFrame);
    }

    stop(message) {
      this.running = false;
      clearInterval(this.settingsTimer);
      if (this.ws) { this.ws.onclose = null; this.ws.close(); this.ws = null; }
      if (this.stream) { this.stream.getTracks().forEach((t) => t.stop()); this.stream = null; }
      this.video.srcObject = null;
      this.pending.clear();
      this.last = null;
      const ctx = this.canvas.getContext("2d");
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
      this.button.textContent = "Start live analysis";
      this.status(message || "Stopped.");
    }

    status(text) { if (this.statusLine) this.statusLine.textContent = text; }

    watch(token) {  // the RTSP view: analysed frames and their results from the server
      this.unwatch();
      if (!token) return;
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      this.ws = new WebSocket(`${proto}//${location.host}${WATCH_PATH}?token=${encodeURIComponent(token)}`);
      this.ws.binaryType = "arraybuffer";
      this.running = true;
      this.ws.onmessage = (ev) => {
        if (typeof ev.data === "string") { this.onMessage(ev.data); return; }
        const id = new DataView(ev.data).getUint32(0, true);
        createImageBitmap(new Blob([ev.data.slice(4)], {type: "image/jpeg"})).then((bitmap) => {
          this.images.set(id, bitmap);
          for (const k of this.images.keys()) if (k < id - 4) { this.images.get(k).close(); this.images.delete(k); }
          this.show(id);
        });
      };
      this.ws.onclose = () => { this.running = false; };
    }

    unwatch() {
      if (this.ws) { this.ws.onclose = null; this.ws.close(); this.ws = null; }
      this.running = false;
      this.images.forEach((b) => b.close());
      this.images.clear();
    }

    show(id) {  // draw frame `id` once both its picture and its result are here (the same analysed frame)
      if (!this.last || this.last.id !== id || !this.images.has(id)) return;
      const bitmap = this.images.get(id), f = this.frame, dpr = window.devicePixelRatio || 1;
      const w = Math.round(f.clientWidth * dpr), h = Math.round(f.clientHeight * dpr);
      if (f.width !== w || f.height !== h) { f.width = w; f.height = h; }
      const ctx = f.getContext("2d");
      const s = Math.min(w / bitmap.width, h / bitmap.height);
      ctx.fillStyle = "#111"; ctx.fillRect(0, 0, w, h);
      ctx.drawImage(bitmap, (w - bitmap.width * s) / 2, (h - bitmap.height * s) / 2, bitmap.width * s, bitmap.height * s);
      this.draw();
    }

    readSettings() {
      const num = (sel, dflt) => { const el = document.querySelector(sel); const v = el ? parseFloat(el.value) : NaN; return Number.isFinite(v) ? v : dflt; };
      const smoothing = document.querySelector("#smoothing input");
      const boxes = document.querySelectorAll("#overlays input[type=checkbox]");
      const overlays = {};
      boxes.forEach((b) => {
        const label = b.closest("label");
        const name = b.value || (label ? label.textContent.trim() : "");
        overlays[name] = b.checked;
      });
      this.overlays = boxes.length ? overlays : null;
      return {type: "settings", max_faces: num("#max-faces input[type=number]", 1),
              smoothing: smoothing && smoothing.value ? smoothing.value : "ema",
              smoothing_strength: num("#smoothing-strength input[type=number]", 0.6)};
    }

    on(name) {  // is this overlay switched on in the page's settings? (all on when they cannot be read)
      if (!this.overlays) return name !== "panel";
      const labels = {box: "box", label: "label", bars: "probability bars", attention: "attention map",
                      au_regions: "AU regions"};
      if (name in this.overlays) return this.overlays[name];
      if (labels[name] in this.overlays) return this.overlays[labels[name]];
      return true;
    }

    sendSettings(force) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      const s = JSON.stringify(this.readSettings());
      if (force || s !== this.settings) { this.settings = s; this.ws.send(s); }
    }

    capture() {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.pending.size >= MAX_IN_FLIGHT) return;
      const vw = this.video.videoWidth, vh = this.video.videoHeight;
      if (!vw || !vh) return;
      const w = Math.min(SEND_WIDTH, vw), h = Math.round(w * vh / vw);
      this.grab.width = w; this.grab.height = h;
      const g = this.grab.getContext("2d", {willReadFrequently: true});
      g.drawImage(this.video, 0, 0, w, h);  // the true image: the mirror is only CSS on the preview
      const id = this.nextId++;
      const t = performance.now();
      this.pending.add(id);
      this.root.dispatchEvent(new CustomEvent("sf-capture", {bubbles: true, detail: {id, time: t, canvas: this.grab}}));
      this.grab.toBlob((blob) => {
        if (!blob || !this.ws || this.ws.readyState !== WebSocket.OPEN) { this.pending.delete(id); return; }
        blob.arrayBuffer().then((buf) => {
          const msg = new Uint8Array(4 + buf.byteLength);
          new DataView(msg.buffer).setUint32(0, id, true);
          msg.set(new Uint8Array(buf), 4);
          if (this.ws && this.ws.readyState === WebSocket.OPEN) { this.ws.send(msg); this.stats.sent++; }
          else this.pending.delete(id);
        });
      }, "image/jpeg", JPEG_QUALITY);
    }

    onMessage(data) {
      let msg;
      try { msg = JSON.parse(data); } catch (e) { return; }
      if (msg.type === "error") {
        this.stats.errors++;
        if (msg.final) { this.error = msg.message; this.stop(msg.message); }
        else this.status(msg.message);
        if (msg.id !== undefined) this.pending.delete(msg.id);
        return;
      }
      if (msg.type === "status") { this.status(msg.text.replace(/`/g, "")); return; }
      if (msg.type !== "result") return;
      for (const id of this.pending) if (id <= msg.id) this.pending.delete(id);  // older ones were dropped
      this.stats.results++;
      this.stats.dropped = msg.dropped;
      this.last = msg;
      if (this.remote) { this.show(msg.id); return; }
      if (!this.frameRequested) {
        this.frameRequested = true;
        requestAnimationFrame(() => { this.frameRequested = false; this.draw(); });
      }
    }

    draw() {
      const msg = this.last;
      if (!msg || !this.running) return;
      const surface = this.remote ? this.frame : this.video;
      const cw = surface.clientWidth, ch = surface.clientHeight, dpr = window.devicePixelRatio || 1;
      if (this.canvas.width !== Math.round(cw * dpr) || this.canvas.height !== Math.round(ch * dpr)) {
        this.canvas.width = Math.round(cw * dpr); this.canvas.height = Math.round(ch * dpr);
      }
      const ctx = this.canvas.getContext("2d");
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
      // analysed-frame pixels -> canvas pixels, mirrored like the preview (object-fit: contain)
      const s = Math.min(this.canvas.width / msg.width, this.canvas.height / msg.height);
      const ox = (this.canvas.width - msg.width * s) / 2, oy = (this.canvas.height - msg.height * s) / 2;
      // (the RTSP view is not mirrored: it is not the visitor's own face)
      const view = this.remote ? [s, 0, ox, 0, s, oy] : [-s, 0, ox + msg.width * s, 0, s, oy];
      for (const face of msg.faces) this.drawFace(ctx, face, view, s / dpr);
      this.drawPanels(msg);
      this.stats.drawn++;
      this.root.dataset.drawn = String(this.stats.drawn);
      this.root.dispatchEvent(new CustomEvent("sf-overlay", {bubbles: true, detail: {id: msg.id, time: performance.now(), faces: msg.faces.length}}));
    }

    drawFace(ctx, face, view, scale) {
      const dpr = window.devicePixelRatio || 1;
      const [x0, y0, x1, y1] = face.box;
      const a = apply(view, x0, y0), b = apply(view, x1, y1);
      const left = Math.min(a[0], b[0]), right = Math.max(a[0], b[0]), top = a[1], bottom = b[1];
      const font = Math.max(12, Math.min(20, 0.09 * (bottom - top) / dpr)) * dpr;
      if (this.on("attention")) this.drawHeat(ctx, face.attention, view);
      if (this.on("au_regions")) {
        setTransform(ctx, view);
        ctx.lineWidth = 1.5 / Math.abs(view[0]) * dpr;
        for (const r of face.aus) {
          ctx.strokeStyle = r.colour;
          for (const [cx, cy, rx, ry, t] of r.ellipses) {
            ctx.beginPath(); ctx.ellipse(cx, cy, Math.max(rx, 0.5), Math.max(ry, 0.5), t, 0, 2 * Math.PI); ctx.stroke();
          }
        }
        ctx.setTransform(1, 0, 0, 1, 0, 0);
      }
      if (this.on("box")) {
        ctx.strokeStyle = face.colour; ctx.lineWidth = 2 * dpr;
        ctx.strokeRect(left, top, right - left, bottom - top);
      }
      ctx.font = `600 ${font}px system-ui, sans-serif`;
      ctx.textBaseline = "bottom";
      if (this.on("label")) {
        const text = `${face.label} ${Math.round(face.confidence * 100)}%`;
        const w = ctx.measureText(text).width + 10 * dpr;
        ctx.fillStyle = face.colour; ctx.fillRect(left, top - font - 6 * dpr, w, font + 6 * dpr);
        ctx.fillStyle = "#111"; ctx.fillText(text, left + 5 * dpr, top - 3 * dpr);
      }
      // trust cue under the box: the trust score (and what lowered it) where there is one, else the
      // attention-AU agreement; marked when low
      const agreement = face.cosine === null ? "no AU map (neutral)" : `AU agreement ${face.cosine.toFixed(2)}`;
      const cue = face.trust === null ? agreement
        : `trust ${Math.round(face.trust * 100)}%${face.trust_reason ? " · " + face.trust_reason : ""}`;
      const small = Math.round(font * 0.8);
      ctx.font = `${small}px system-ui, sans-serif`;
      ctx.textBaseline = "top";
      const cueText = face.low_trust ? `⚠ ${cue}` : cue;
      const cw = ctx.measureText(cueText).width + 8 * dpr;
      ctx.fillStyle = face.trust_colour || (face.low_trust ? "rgba(255,176,32,0.92)" : "rgba(18,20,26,0.75)");
      ctx.fillRect(left, bottom + 2 * dpr, cw, small + 6 * dpr);
      ctx.fillStyle = face.trust_colour || face.low_trust ? "#111" : "#eee";
      ctx.fillText(cueText, left + 4 * dpr, bottom + 5 * dpr);
      if (this.on("bars")) this.drawBars(ctx, face, right + 6 * dpr, top, small);
      if (this.on("au_regions") && face.aus.length) {
        // each region tagged with its AU code; the codes with their FACS names listed under the box
        const tag = Math.round(small * 0.8);
        ctx.font = `600 ${tag}px system-ui, sans-serif`;
        ctx.textBaseline = "bottom";
        ctx.lineWidth = 3 * dpr;
        for (const r of face.aus) {
          if (!r.ellipses.length) continue;
          const [cx, cy, , ry] = r.ellipses[0];
          const p = apply(view, cx, cy - ry);
          const w = ctx.measureText(r.code).width;
          ctx.strokeStyle = "rgba(0,0,0,0.75)"; ctx.strokeText(r.code, p[0] - w / 2, p[1] - 1 * dpr);
          ctx.fillStyle = r.colour; ctx.fillText(r.code, p[0] - w / 2, p[1] - 1 * dpr);
        }
        ctx.font = `${small}px system-ui, sans-serif`;
        ctx.textBaseline = "top";
        let y = bottom + small + 10 * dpr;
        for (const r of face.aus) {
          const text = `${r.code} ${r.name}`;
          ctx.fillStyle = "rgba(18,20,26,0.75)";
          ctx.fillRect(left, y, ctx.measureText(text).width + 8 * dpr, small + 4 * dpr);
          ctx.fillStyle = r.colour; ctx.fillText(text, left + 4 * dpr, y + 2 * dpr);
          y += small + 5 * dpr;
        }
      }
    }

    drawHeat(ctx, att, view) {
      const [w, h] = att.size;
      if (this.heat.width !== w || this.heat.height !== h) { this.heat.width = w; this.heat.height = h; }
      const bytes = atob(att.data);
      const hc = this.heat.getContext("2d");
      const img = hc.createImageData(w, h);
      for (let i = 0; i < w * h; i++) {
        const v = bytes.charCodeAt(i) / 255, [r, g, b] = turbo(v);
        img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b;
        img.data[4 * i + 3] = 255 * 0.6 * v * Math.sqrt(v);  // low attention stays nearly clear
      }
      hc.putImageData(img, 0, 0);
      // map pixels -> crop pixels -> frame pixels -> canvas
      const k = att.crop / w;
      const m = mul(view, mul(att.to_frame, [k, 0, 0, 0, att.crop / h, 0]));
      ctx.save();
      setTransform(ctx, m);
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(this.heat, 0, 0);
      ctx.restore();
    }

    drawBars(ctx, face, x, y, size) {
      const names = Object.keys(face.probs);
      const dpr = window.devicePixelRatio || 1;
      const row = size + 4 * dpr, width = 70 * dpr, labelW = 7.2 * size;
      if (x + labelW + width > this.canvas.width) return;  // no room beside the face
      ctx.fillStyle = "rgba(18,20,26,0.72)";
      ctx.fillRect(x, y, labelW + width + 8 * dpr, row * names.length + 6 * dpr);
      ctx.font = `${size}px system-ui, sans-serif`;
      ctx.textBaseline = "middle";
      names.forEach((n, i) => {
        const cy = y + 3 * dpr + row * i + row / 2;
        ctx.fillStyle = n === face.label ? "#fff" : "#aab";
        ctx.fillText(n, x + 4 * dpr, cy);
        ctx.fillStyle = "#3a3e48"; ctx.fillRect(x + labelW, cy - size / 3, width, size * 2 / 3);
        ctx.fillStyle = n === face.label ? face.colour : "#8a90a0";
        ctx.fillRect(x + labelW, cy - size / 3, width * face.probs[n], size * 2 / 3);
      });
    }

    drawPanels(msg) {
      if (!this.panels) return;
      const face = msg.faces[0];
      const ms = Object.values(msg.latency_ms || {}).reduce((a, b) => a + b, 0);
      if (!face) {
        this.panels.innerHTML = `<p class="sf-summary">No face found. <span class="sf-muted">frame ${msg.index}, ${ms.toFixed(0)} ms</span></p>`;
        return;
      }
      const bars = (obj, colour, n = 8) => Object.entries(obj).slice(0, n).map(([k, v]) =>
        `<div class="sf-row"><span>${esc(k)}</span><span class="sf-bar"><i style="width:${(100 * v).toFixed(1)}%;background:${colour}"></i></span><b>${(100 * v).toFixed(0)}%</b></div>`).join("");
      const cos = face.cosine === null ? "n/a" : face.cosine.toFixed(2);
      this.panels.innerHTML =
        `<p class="sf-summary"><b>Face 1 of ${msg.faces.length}</b> (track ${face.track}): <b>${esc(face.label)}</b> ${(100 * face.confidence).toFixed(0)}%<br>` +
        `attention ↔ AU-map cosine: <b>${cos}</b> (${esc(face.agreement)})<br>` +
        (face.trust === null ? "" : `trust: <b>${Math.round(face.trust * 100)}%</b>${face.trust_reason ? " (" + esc(face.trust_reason) + ")" : ""}`) +
        `${face.low_trust ? " <span class='sf-warn'>low trust</span>" : ""}<br>` +
        `<span class="sf-muted">frame ${msg.index}, ${ms.toFixed(0)} ms</span></p>` +
        `<h4>Expression probabilities (smoothed)</h4>${bars(face.probs, face.colour)}` +
        (Object.keys(face.blendshapes).length ? `<h4>Measured blendshapes for ${esc(face.blendshapes_for)} (MediaPipe)</h4>${bars(face.blendshapes, "#6cb4ff")}` : "") +
        (Object.keys(face.au_share).length ? `<h4>Share of attention per AU region (top 8)</h4>${bars(face.au_share, "#f0a040")}` : "");
    }
  }

  // The view's HTML is rendered by Gradio after this script loads: bind on first use.
  function viewOf(el) {
    const root = el.closest(".sf-live");
    if (!root) return null;
    if (!root.sfLive) root.sfLive = new LiveView(root);
    return root.sfLive;
  }
  document.addEventListener("click", (ev) => {
    const button = ev.target.closest && ev.target.closest("button.sf-start");
    if (!button) return;
    const view = viewOf(button);
    if (view) { if (view.running) view.stop(); else view.start(); }
  });
  // The RTSP view follows the watch token that the Start and Stop buttons write into the page.
  setInterval(() => {
    const holder = document.querySelector(".sf-rtsp-token");
    const root = document.querySelector('.sf-live[data-mode="rtsp"]');
    if (!holder || !root) return;
    const view = viewOf(root), token = holder.dataset.token || "";
    if (token !== (view.token || "")) { view.token = token; if (token) view.watch(token); else view.unwatch(); }
  }, 250);
  window.addEventListener("pagehide", () => {
    document.querySelectorAll(".sf-live").forEach((r) => {
      if (r.sfLive && r.sfLive.running) { if (r.sfLive.remote) r.sfLive.unwatch(); else r.sfLive.stop(); }
    });
  });
})();
