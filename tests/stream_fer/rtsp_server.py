"""A small RTSP server on 127.0.0.1 for tests and benchmarks: H.264 over RTP, interleaved in the RTSP TCP
connection (RFC 2326 section 10.12), packetised per RFC 6184 (single NAL unit packets and FU-A fragments).

FFmpeg can push RTSP (its muxer is a client that ANNOUNCEs) and can receive a push (`rtsp_flags=listen`),
but it cannot serve a stream that a normal client DESCRIBEs and PLAYs, which is what cameras do and what
the product's RtspSource expects. So this server speaks the few methods a player needs (OPTIONS, DESCRIBE,
SETUP with TCP interleaving, PLAY, GET_PARAMETER, TEARDOWN) and sends frames that PyAV's libx264 encoded
in advance, paced at the stream's frame rate.

    with RtspServer.from_video("clip.mp4", fps=30) as server:
        url = server.url            # rtsp://127.0.0.1:<port>/stream
        ...
        server.stop()               # drops every client and stops listening (a camera that went away)

Each frame's send time (time.monotonic) is recorded in `sent_at`, keyed by the frame's sequence number, for
latency measurements. Not a general server: one video track, TCP only, no authentication.
"""

from __future__ import annotations

import base64
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RTP_CLOCK = 90000
PAYLOAD_TYPE = 96
MAX_PAYLOAD = 1400  # bytes of NAL data per RTP packet; larger NAL units are split into FU-A fragments


def encode_h264(frames: Iterable[np.ndarray], fps: float, gop: int = 30) -> list[list[bytes]]:
    """RGB frames -> one list of NAL units (without start codes) per access unit, SPS/PPS repeated before
    every key frame so a client can join (or rejoin) at any key frame."""
    import av

    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height = w - w % 2, h - h % 2
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, RTP_CLOCK)
    ctx.framerate = Fraction(fps).limit_denominator(1001)
    ctx.gop_size = gop
    ctx.max_b_frames = 0
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "28",
                   "x264-params": f"keyint={gop}:min-keyint={gop}:repeat-headers=1"}
    units: list[list[bytes]] = []

    def collect(packets) -> None:
        for packet in packets:
            units.append(split_annexb(bytes(packet)))

    for i, rgb in enumerate([first, *frames]):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: ctx.height, : ctx.width]), format="rgb24")
        vf.pts = int(round(i * RTP_CLOCK / fps))
        collect(ctx.encode(vf))
    collect(ctx.encode(None))
    return units


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (start codes 00 00 01 or 00 00 00 01 removed)."""
    nals: list[bytes] = []
    i, n = 0, len(data)
    starts: list[tuple[int, int]] = []  # (start code position, payload position)
    while i + 3 <= n:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            zero4 = i > 0 and data[i - 1] == 0
            starts.append((i - 1 if zero4 else i, i + 3))
            i += 3
        else:
            i += 1
    for k, (_, payload) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else n
        if end > payload:
            nals.append(data[payload:end])
    return nals


def rtp_packets(nals: list[bytes], seq: int, timestamp: int, ssrc: int) -> tuple[list[bytes], int]:
    """RTP packets for one access unit (marker bit on the last one) and the next sequence number."""
    payloads: list[bytes] = []
    for nal in nals:
        if len(nal) <= MAX_PAYLOAD:
            payloads.append(nal)
            continue
        header, body = nal[0], nal[1:]
        indicator = (header & 0xE0) | 28  # FU-A
        nal_type = header & 0x1F
        chunks = [body[i: i + MAX_PAYLOAD - 2] for i in range(0, len(body), MAX_PAYLOAD - 2)]
        for k, chunk in enumerate(chunks):
            fu_header = nal_type | (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0)
            payloads.append(bytes((indicator, fu_header)) + chunk)
    packets = []
    for k, payload in enumerate(payloads):
        marker = 0x80 if k == len(payloads) - 1 else 0
        header = struct.pack("!BBHII", 0x80, marker | PAYLOAD_TYPE, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
        packets.append(header + payload)
        seq += 1
    return packets, seq


def _sdp(units: list[list[bytes]], port: int) -> str:
    sps = next((n for u in units for n in u if n[0] & 0x1F == 7), None)
    pps = next((n for u in units for n in u if n[0] & 0x1F == 8), None)
    fmtp = "packetization-mode=1"
    if sps is not None and pps is not None:
        fmtp += (f";profile-level-id={sps[1:4].hex().upper()};sprop-parameter-sets="
                 f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}")
    return ("v=0\r\n"
            f"o=- {random.randint(1, 1 << 30)} 1 IN IP4 127.0.0.1\r\n"
            "s=stream-fer test stream\r\n"
            "c=IN IP4 127.0.0.1\r\n"
            "t=0 0\r\n"
            f"m=video 0 RTP/AVP {PAYLOAD_TYPE}\r\n"
            f"a=rtpmap:{PAYLOAD_TYPE} H264/{RTP_CLOCK}\r\n"
            f"a=fmtp:{PAYLOAD_TYPE} {fmtp}\r\n"
            "a=control:track0\r\n")


class RtspServer:
    """Serves pre-encoded H.264 access units, paced at `fps`, to any number of clients (each from the first
    access unit; a client joining a looping stream starts at a key frame)."""

    def __init__(self, units: list[list[bytes]], fps: float = 30.0, loop: bool = True, port: int = 0,
                 path: str = "stream") -> None:
        if not units:
            raise ValueError("no access units to serve")
        self.units = units
        self.fps = fps
        self.loop = loop
        self.path = path
        self.sent_at: dict[int, float] = {}  # frame sequence number (per server) -> monotonic send time
        self.frames_sent = 0
        self.connections = 0
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = 0

    @classmethod
    def from_video(cls, path: str | Path, fps: float = 30.0, max_frames: int | None = None, **kwargs) -> RtspServer:
        import av

        with av.open(str(path)) as container:
            frames = []
            for vf in container.decode(video=0):
                frames.append(vf.to_ndarray(format="rgb24"))
                if max_frames and len(frames) >= max_frames:
                    break
        return cls(encode_h264(frames, fps), fps=fps, **kwargs)

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{self.path}"

    def start(self) -> RtspServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._requested_port))
        sock.listen(8)
        sock.settimeout(0.2)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._stopped.clear()
        self._spawn(self._accept, "rtsp-accept")
        return self

    def stop(self) -> None:
        """Stop listening and drop every client, as a camera that loses power."""
        self._stopped.set()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with self._lock:
            clients, self._clients = list(self._clients), set()
        for client in clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        self._threads = []

    def restart(self) -> RtspServer:
        """Listen again on the same port (a camera that comes back)."""
        self._requested_port = self.port
        return self.start()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, target, name: str, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            sock = self._sock
            if sock is None:
                return
            try:
                client, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._clients.add(client)
                self.connections += 1
            self._spawn(self._serve, "rtsp-client", client)

    # ------------------------------------------------------------------------------------ one client

    def _serve(self, client: socket.socket) -> None:
        session = f"{random.getrandbits(48):012x}"
        reader = client.makefile("rb")
        send_lock = threading.Lock()
        playing = threading.Event()
        try:
            while not self._stopped.is_set():
                request = self._read_request(reader)
                if request is None:
                    break
                method, _url, headers = request
                cseq = headers.get("cseq", "0")
                extra: list[str] = []
                body = ""
                status = "200 OK"
                if method == "OPTIONS":
                    extra.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
                elif method == "DESCRIBE":
                    body = _sdp(self.units, self.port)
                    extra += ["Content-Type: application/sdp", f"Content-Base: {self.url}/"]
                elif method == "SETUP":
                    transport = headers.get("transport", "")
                    if "RTP/AVP/TCP" not in transport.upper():
                        status = "461 Unsupported Transport"
                    else:
                        extra += ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
                                  f"Session: {session};timeout=60"]
                elif method == "PLAY":
                    extra += [f"Session: {session}", "Range: npt=0.000-"]
                elif method in ("GET_PARAMETER", "SET_PARAMETER") or method == "TEARDOWN":
                    extra.append(f"Session: {session}")
                else:
                    status = "405 Method Not Allowed"
                response = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", "Server: stream-fer-test", *extra]
                payload = body.encode()
                if payload:
                    response.append(f"Content-Length: {len(payload)}")
                data = ("\r\n".join(response) + "\r\n\r\n").encode() + payload
                with send_lock:
                    client.sendall(data)
                if method == "PLAY" and status.startswith("200") and not playing.is_set():
                    playing.set()
                    self._spawn(self._stream, "rtsp-stream", client, send_lock)
                if method == "TEARDOWN":
                    break
        except OSError:
            pass
        finally:
            playing.set()
            with self._lock:
                self._clients.discard(client)
            try:
                client.close()
            except OSError:
                pass

    @staticmethod
    def _read_request(reader) -> tuple[str, str, dict[str, str]] | None:
        """The next RTSP request; interleaved data the client sends (RTCP receiver reports) is skipped."""
        while True:
            first = reader.read(1)
            if not first:
                return None
            if first == b"$":  # interleaved binary frame: channel, 16-bit length, data
                header = reader.read(3)
                if len(header) < 3:
                    return None
                reader.read(struct.unpack("!H", header[1:])[0])
                continue
            line = first + reader.readline()
            if not line.strip():
                continue
            parts = line.decode("latin-1").split()
            if len(parts) < 3:
                return None
            headers: dict[str, str] = {}
            while True:
                raw = reader.readline()
                if not raw or raw in (b"\r\n", b"\n"):
                    break
                key, _, value = raw.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                reader.read(length)
            return parts[0].upper(), parts[1], headers

    def _stream(self, client: socket.socket, send_lock: threading.Lock) -> None:
        ssrc = random.getrandbits(32)
        seq = random.getrandbits(16)
        ts0 = random.getrandbits(31)
        period = 1.0 / self.fps
        start = time.monotonic()
        n = 0
        try:
            while not self._stopped.is_set():
                if n >= len(self.units) and not self.loop:
                    break
                unit = self.units[n % len(self.units)]
                due = start + n * period
                delay = due - time.monotonic()
                if delay > 0 and self._stopped.wait(delay):
                    break
                packets, seq = rtp_packets(unit, seq, ts0 + int(round(n * RTP_CLOCK / self.fps)), ssrc)
                data = b"".join(b"$\x00" + struct.pack("!H", len(p)) + p for p in packets)
                with send_lock:
                    client.sendall(data)
                self.sent_at[self.frames_sent] = time.monotonic()
                self.frames_sent += 1
                n += 1
        except OSError:
            return
        if not self.loop:  # the stream is over: hang up, as a camera that stops
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def synthetic_frames(n: int, width: int = 320, height: int = 240) -> list[np.ndarray]:
    """Moving colour bars: cheap frames whose content changes every frame."""
    x = np.arange(width)[None, :, None]
    y = np.arange(height)[:, None, None]
    channel = np.array([0, 85, 170])[None, None, :]
    return [((x * 2 + y + channel + 8 * i) % 256).astype(np.uint8) for i in range(n)]
