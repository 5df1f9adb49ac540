// The page of serve.py (engine/web_app.py has the API). No framework, no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 300;
const JPEG_QUALITY = 0.85;
const SEND_WIDTH = 320; // frames are sent at most this wide: the models see 64-260 pixels
let info = null;

function show(element, visible) { element.hidden = !visible; }

function fail(element, message) {
  element.textContent = message;
  show(element, true);
}

async function loadInfo() {
  const response = await fetch("/api/info");
  info = await response.json();
  $("models").textContent = `Models: ${info.pipeline} (reported head ${info.head}), `
    + `${info.fps} frames/s${info.reads_keypoints ? ", with keypoints" : ""}.`;
  if (info.caveat) fail($("caveat"), info.caveat); // shown above both modes
  const limits = info.limits;
  $("limits").textContent = `at most ${limits.max_upload_mb} MB and ${limits.max_seconds} s`;
  for (const clip of info.demo_clips) {
    const option = document.createElement("option");
    option.value = clip.index;
    option.textContent = clip.name;
    $("demo-clip").appendChild(option);
  }
  show($("demo-form"), info.demo_clips.length > 0);
}

function selectTab(name) {
  for (const tab of ["recording", "camera"]) {
    $(`tab-${tab}`).classList.toggle("active", tab === name);
    show($(tab), tab === name);
  }
}

// -- recording mode ------------------------------------------------------------------------
async function submitJob(request) {
  show($("upload-error"), false);
  show($("result"), false);
  $("upload-button").disabled = $("demo-button").disabled = true;
  try {
    const response = await request;
    const body = await response.json();
    if (!response.ok) {
      fail($("upload-error"), body.error || `the server answered ${response.status}`);
      return;
    }
    await follow(body);
  } catch (error) {
    fail($("upload-error"), `the server cannot be reached: ${error}`);
  } finally {
    $("upload-button").disabled = $("demo-button").disabled = false;
  }
}

function describe(job) {
  if (job.state === "queued") {
    return `${job.name}: waiting, ${job.position - 1} recording(s) before it (${job.waited_s} s)`;
  }
  return `${job.name}: ${job.step} (${job.run_s} s)`;
}

async function follow(job) {
  const status = $("job-status");
  show(status, true);
  while (job.state === "queued" || job.state === "running") {
    status.textContent = describe(job);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    const response = await fetch(`/api/jobs/${job.id}`);
    job = await response.json();
    if (!response.ok) {
      fail($("upload-error"), job.error);
      return;
    }
  }
  if (job.state === "failed") {
    show(status, false);
    fail($("upload-error"), job.error);
    return;
  }
  status.textContent = `${job.name}: done in ${job.run_s} s (after ${job.waited_s} s waiting)`;
  showResult(job);
}

function showResult(job) {
  const result = job.result;
  $("result").dataset.job = job.id;
  $("result-name").textContent = `${result.input}: ${result.model.pipeline}, head ${result.head}`;
  const glosses = $("glosses");
  glosses.replaceChildren();
  for (const gloss of result.glosses) {
    const span = document.createElement("span");
    span.className = "gloss";
    span.textContent = gloss.gloss;
    span.dataset.start = gloss.start_s;
    span.dataset.end = gloss.end_s;
    span.title = `${gloss.start_s.toFixed(2)} - ${gloss.end_s.toFixed(2)} s`;
    glosses.appendChild(span);
  }
  if (!result.glosses.length) glosses.textContent = "(no gloss recognised)";
  $("translation").textContent = result.text === null ? "(the run has no translation model)"
    : result.text;
  $("result-video").src = job.files.video;
  $("posteriors").src = job.files.posteriors;
  $("download-json").href = job.files.json;
  $("download-overlay").href = job.files.overlay;
  $("download-posteriors").href = job.files.posteriors;
  show($("result"), true);
}

function highlight() {
  const now = $("result-video").currentTime;
  for (const span of document.querySelectorAll("#glosses .gloss")) {
    const on = Number(span.dataset.start) <= now && now < Number(span.dataset.end);
    span.classList.toggle("now", on);
  }
}

// -- camera mode -----------------------------------------------------------------------------
const camera = { socket: null, stream: null, timer: null, latencies: [], runs: [], sent: 0 };

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : NaN;
}

function figure(values) {
  return `${median(values).toFixed(0)} ms / ${values[values.length - 1].toFixed(0)} ms`;
}

async function startCamera() {
  show($("camera-error"), false);
  for (const id of ["committed", "partial", "running-text", "sentences"]) $(id).replaceChildren();
  Object.assign(camera, { latencies: [], runs: [], sent: 0 });
  delete $("camera-state").dataset.ended;
  try {
    camera.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    fail($("camera-error"), `no camera: ${error.name} (${error.message})`);
    return;
  }
  $("camera-video").srcObject = camera.stream;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  camera.socket = new WebSocket(`${scheme}://${location.host}/api/camera`);
  camera.socket.binaryType = "arraybuffer";
  camera.socket.onmessage = (message) => received(JSON.parse(message.data));
  camera.socket.onclose = () => stopSending("camera off (stream ended)");
  $("camera-start").disabled = true;
  $("camera-stop").disabled = false;
  $("camera-state").textContent = "connecting…";
}

function sendFrame() {
  const video = $("camera-video");
  const socket = camera.socket;
  if (video.readyState < 2 || !socket || socket.readyState !== WebSocket.OPEN) return;
  if (socket.bufferedAmount > 256 * 1024) return; // the network is behind: skip this frame
  const canvas = $("camera-canvas");
  const scale = Math.min(1, SEND_WIDTH / video.videoWidth);
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  const captured = performance.now();
  canvas.toBlob(async (blob) => {
    const header = new DataView(new ArrayBuffer(8));
    header.setFloat64(0, captured, true);
    const body = await blob.arrayBuffer();
    if (socket.readyState !== WebSocket.OPEN) return;
    socket.send(new Blob([header.buffer, body]));
    camera.sent += 1;
  }, "image/jpeg", JPEG_QUALITY);
}

function received(message) {
  if (message.type === "ready") {
    $("camera-state").textContent = "streaming";
    camera.timer = setInterval(sendFrame, 1000 / info.fps);
  } else if (message.type === "error") {
    fail($("camera-error"), message.message);
  } else if (message.type === "dropped") {
    $("frames-sent").textContent = `${camera.sent} / ${message.frames}`;
  } else if (message.type === "event") {
    camera.latencies.push(performance.now() - message.frame_ms);
    $("latency").textContent = figure(camera.latencies);
    $("frames-sent").textContent = `${camera.sent} / ${message.dropped}`;
    showEvent(message.event);
  }
}

function glossSpan(gloss, sentence, kind = "") {
  const span = document.createElement("span");
  span.className = `gloss ${kind}`.trim();
  span.dataset.sentence = sentence;
  span.textContent = gloss.gloss;
  span.title = `${gloss.start_s.toFixed(2)} - ${gloss.end_s.toFixed(2)} s`;
  return span;
}

function showEvent(event) {
  if (event.kind === "partial") {
    $("partial").textContent = event.glosses.join(" ");
  } else if (event.kind === "commit") {
    $("committed").appendChild(glossSpan(event, event.sentence));
  } else if (event.kind === "revision") {
    // the second pass's glosses take the place of the sentence's first-pass ones
    const first = $("committed").querySelectorAll(`.gloss[data-sentence="${event.sentence}"]`);
    const revised = event.spans.map((span) => glossSpan(span, event.sentence, "revised"));
    if (first.length) {
      first[0].before(...revised);
      first.forEach((span) => span.remove());
    } else {
      $("committed").append(...revised);
    }
  } else if (event.kind === "text") {
    $("running-text").textContent = event.text;
  } else if (event.kind === "sentence") {
    const item = document.createElement("li");
    item.textContent = `${event.glosses.join(" ")}${event.text === null ? "" : ` → ${event.text}`}`;
    $("sentences").appendChild(item);
    $("running-text").textContent = "";
  } else if (event.kind === "timing") {
    camera.runs.push(event.recognition_s * 1000);
    $("engine-time").textContent = figure(camera.runs);
    $("realtime").textContent = `${event.realtime_factor.toFixed(2)}`;
  } else if (event.kind === "end") {
    $("partial").textContent = "";
    $("camera-state").dataset.ended = "1";
    if (event.error) fail($("camera-error"), event.error);
  }
}

function stopSending(state) {
  clearInterval(camera.timer);
  camera.timer = null;
  if (camera.stream) camera.stream.getTracks().forEach((track) => track.stop());
  camera.stream = null;
  $("camera-state").textContent = state;
  $("camera-start").disabled = false;
  $("camera-stop").disabled = true;
}

function stopCamera() {
  if (camera.socket && camera.socket.readyState === WebSocket.OPEN) camera.socket.send("stop");
  stopSending("stopping: the last glosses and the sentence…");
}

// -- wiring ------------------------------------------------------------------------------------
$("tab-recording").onclick = () => selectTab("recording");
$("tab-camera").onclick = () => selectTab("camera");
$("upload-form").onsubmit = (event) => {
  event.preventDefault();
  const file = $("upload-file").files[0];
  const name = encodeURIComponent(file.name);
  submitJob(fetch(`/api/jobs?name=${name}`, { method: "POST", body: file }));
};
$("demo-form").onsubmit = (event) => {
  event.preventDefault();
  submitJob(fetch(`/api/demo/${$("demo-clip").value}`, { method: "POST" }));
};
$("result-video").addEventListener("timeupdate", highlight);
$("camera-start").onclick = startCamera;
$("camera-stop").onclick = stopCamera;
loadInfo().catch((error) => fail($("upload-error"), `the server cannot be reached: ${error}`));
