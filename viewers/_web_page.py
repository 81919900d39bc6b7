"""The HTML, CSS and JavaScript of the self-contained web viewer (see :mod:`persp3d.viewers.web`).

Written for this project (no third-party code): WebGL 1 where the browser has it, else a
2D-canvas renderer (software projection, painter's algorithm), so the page works in any
browser, offline. The page reads one JSON payload (``__DATA__``) and never fetches anything.

Convention (the page's camera is a persp3d orbit camera in the item's up frame ``F``, a
rotation whose y column is the world's up): eye
``= target + distance * F (cos(el) sin(az), sin(el), cos(el) cos(az))``, ``R`` rows
(right, down, forward) as :func:`persp3d.look_at`, ``X_cam = R X + t``, OpenCV axes,
``fy = fx = H / 2 / tan(fov / 2)``, principal point ``(W / 2, H / 2)``, image row 0 at
the top.
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
html, body { margin: 0; height: 100%; overflow: hidden; background: #fff;
  font: 13px/1.35 system-ui, sans-serif; color: #222; }
#view { position: fixed; left: 0; top: 0; width: 100vw; height: 100vh; display: block;
  cursor: grab; touch-action: none; }
#panel { position: fixed; left: 8px; top: 8px; background: rgba(255,255,255,0.88);
  border: 1px solid #ccc; border-radius: 6px; padding: 8px 10px; max-width: 300px; }
#panel h1 { font-size: 14px; margin: 0 0 6px 0; word-break: break-all; }
#panel label { display: block; white-space: nowrap; }
#panel .row { margin: 3px 0; }
#panel .sw { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px;
  vertical-align: middle; border: 1px solid #888; }
#panel .bar { display: inline-block; width: 90px; height: 10px; vertical-align: middle;
  border: 1px solid #888; }
#panel .small { color: #555; font-size: 11px; }
</style>
</head>
<body>
<canvas id="view"></canvas>
<div id="panel">
  <h1 id="title"></h1>
  <div class="row">show <select id="mode">
    <option value="iso">isosurface</option>
    <option value="voxels">voxels</option>
    <option value="both">isosurface + voxel edges</option>
  </select></div>
  <div class="row">threshold <input id="threshold" type="range" min="0.01" max="0.99"
    step="0.01"> <span id="thvalue"></span></div>
  <div class="row">
    <label><input id="gt" type="checkbox"> ground truth (left)</label>
    <label><input id="cams" type="checkbox"> cameras</label>
    <label><input id="sils" type="checkbox"> silhouettes on image planes</label>
    <label><input id="box" type="checkbox"> volume box</label>
  </div>
  <div class="row small">silhouettes (projected at the threshold):<br><span id="lg1"><span class="sw" id="sw1" style="margin-left:0"></span>ground truth only</span>
    <span id="lg3"><span class="sw" id="sw3"></span>both</span>
    <span class="sw" id="sw2"></span><span id="lb2">projected only</span></div>
  <div class="row small">voxel occupancy 0 <span class="bar" id="bar"></span> 1</div>
  <div class="row small">drag: rotate &middot; shift+drag: pan &middot; wheel: zoom<br>
    keys: V mode, [ ] threshold, G C I B toggles, R reset</div>
  <div class="row small" id="renderer"></div>
</div>
<script type="application/json" id="persp3d-data">__DATA__</script>
<script>
(function () {
"use strict";
var DATA = JSON.parse(document.getElementById("persp3d-data").textContent);

// ---- decoding ---------------------------------------------------------------------
function bytes(s) {
  var bin = atob(s), n = bin.length, out = new Uint8Array(n);
  for (var i = 0; i < n; i++) out[i] = bin.charCodeAt(i);
  return out;
}
function f32(s) { var u = bytes(s); return new Float32Array(u.buffer, 0, u.length >> 2); }
function u16(s) { var u = bytes(s); return new Uint16Array(u.buffer, 0, u.length >> 1); }
function unpackBits(packed, n) {  // 1 bit per voxel, least significant first -> 0 / 255
  var out = new Uint8Array(n);
  for (var i = 0; i < n; i++) out[i] = (packed[i >> 3] >> (i & 7)) & 1 ? 255 : 0;
  return out;
}
function u32(s) { var u = bytes(s); return new Uint32Array(u.buffer, 0, u.length >> 2); }

// ---- options from the page's #hash (e.g. #mode=voxels&ui=0&renderer=canvas) ------------
var HASH = {};
location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
  if (!kv) return;
  var p = kv.split("=");
  HASH[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || "");
});
function flag(name, dflt) { return name in HASH ? HASH[name] !== "0" : dflt; }
function num(name, dflt) { return name in HASH ? parseFloat(HASH[name]) : dflt; }

var V0 = DATA.view;
var FRAME = V0.frame || [[1, 0, 0], [0, 1, 0], [0, 0, 1]];  // orbit axes (columns) in the world
var S = {
  mode: HASH.mode || DATA.mode, threshold: num("threshold", DATA.threshold),
  gt: flag("gt", DATA.show.ground_truth), cams: flag("cams", DATA.show.cameras),
  sils: flag("sils", DATA.show.silhouettes), box: flag("box", DATA.show.box),
  az: num("azimuth", V0.azimuth), el: num("elevation", V0.elevation),
  dist: num("distance", V0.distance), fov: num("fov", V0.fov), target: V0.target.slice()
};

// ---- colours ----------------------------------------------------------------------
var VIRIDIS = DATA.viridis;
function viridis(v) {
  v = Math.min(1, Math.max(0, v)) * (VIRIDIS.length - 1);
  var i = Math.min(VIRIDIS.length - 2, Math.floor(v)), f = v - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

// ---- geometry: triangle soups (positions, normals, colours; 3 vertices per triangle) ----
function meshFromIndexed(pos, faces, color) {
  var nv = pos.length / 3, nf = faces.length / 3, vn = new Float32Array(nv * 3);
  for (var f = 0; f < nf; f++) {
    var a = 3 * faces[3 * f], b = 3 * faces[3 * f + 1], c = 3 * faces[3 * f + 2];
    var ux = pos[b] - pos[a], uy = pos[b + 1] - pos[a + 1], uz = pos[b + 2] - pos[a + 2];
    var wx = pos[c] - pos[a], wy = pos[c + 1] - pos[a + 1], wz = pos[c + 2] - pos[a + 2];
    var nx = uy * wz - uz * wy, ny = uz * wx - ux * wz, nz = ux * wy - uy * wx;
    for (var k = 0; k < 3; k++) {
      var q = 3 * faces[3 * f + k];
      vn[q] += nx; vn[q + 1] += ny; vn[q + 2] += nz;
    }
  }
  var P = new Float32Array(nf * 9), N = new Float32Array(nf * 9), C = new Float32Array(nf * 9);
  for (var g = 0; g < nf * 3; g++) {
    var s = 3 * faces[g], l = Math.hypot(vn[s], vn[s + 1], vn[s + 2]) || 1;
    for (var d = 0; d < 3; d++) {
      P[3 * g + d] = pos[s + d]; N[3 * g + d] = vn[s + d] / l; C[3 * g + d] = color[d];
    }
  }
  return { P: P, N: N, C: C, n: nf * 3 };
}

function decodeMesh(m) {
  var q = u16(m.positions), pos = new Float32Array(q.length);
  for (var i = 0; i < q.length; i++) pos[i] = m.lo[i % 3] + q[i] * m.step[i % 3];
  var faces = m.index_bytes === 2 ? u16(m.faces) : u32(m.faces);
  return meshFromIndexed(pos, faces, m.color);
}

// The six faces of the unit cell, counter-clockwise from outside (as persp3d's scene.py),
// with the neighbour (dx, dy, dz) that hides each face and its normal.
var CELL = [
  [[1,0,0],[1,1,0],[1,1,1],[1,0,1]], [[0,0,0],[0,0,1],[0,1,1],[0,1,0]],
  [[0,1,0],[0,1,1],[1,1,1],[1,1,0]], [[0,0,0],[1,0,0],[1,0,1],[0,0,1]],
  [[0,0,1],[1,0,1],[1,1,1],[0,1,1]], [[0,0,0],[0,1,0],[1,1,0],[1,0,0]]];
var STEP = [[1,0,0],[-1,0,0],[0,1,0],[0,-1,0],[0,0,1],[0,0,-1]];

function voxelGeometry(vol, threshold) {
  // Visible faces of voxels above threshold (a triangle soup) and their edges (line list).
  var D = vol.shape[0], H = vol.shape[1], W = vol.shape[2], occ = vol.data;
  var lim = threshold * 255, quads = [], vals = [];
  function on(i, j, k) {
    return i >= 0 && j >= 0 && k >= 0 && i < W && j < H && k < D && occ[(k * H + j) * W + i] > lim;
  }
  for (var k = 0; k < D; k++) for (var j = 0; j < H; j++) for (var i = 0; i < W; i++) {
    var v = occ[(k * H + j) * W + i];
    if (v <= lim) continue;
    for (var f = 0; f < 6; f++) {
      var s = STEP[f];
      if (!on(i + s[0], j + s[1], k + s[2])) { quads.push(i, j, k, f); vals.push(v / 255); }
    }
  }
  var nq = vals.length, P = new Float32Array(nq * 18), N = new Float32Array(nq * 18),
      C = new Float32Array(nq * 18), E = new Float32Array(nq * 24), o = 0, e = 0;
  var sx = vol.size[0] / W, sy = vol.size[1] / H, sz = vol.size[2] / D;
  var TRI = [0, 1, 2, 0, 2, 3];
  for (var q = 0; q < nq; q++) {
    var ci = quads[4 * q], cj = quads[4 * q + 1], ck = quads[4 * q + 2], face = CELL[quads[4 * q + 3]],
        nrm = STEP[quads[4 * q + 3]], col = viridis(vals[q]), corner = [];
    for (var c = 0; c < 4; c++) corner.push([
      vol.lo[0] + (ci + face[c][0]) * sx, vol.lo[1] + (cj + face[c][1]) * sy,
      vol.lo[2] + (ck + face[c][2]) * sz]);
    for (var t = 0; t < 6; t++) {
      var p = corner[TRI[t]];
      for (var d = 0; d < 3; d++) { P[o] = p[d]; N[o] = nrm[d]; C[o] = col[d]; o++; }
    }
    for (var c2 = 0; c2 < 4; c2++) {
      var a = corner[c2], b = corner[(c2 + 1) % 4];
      E[e++] = a[0]; E[e++] = a[1]; E[e++] = a[2]; E[e++] = b[0]; E[e++] = b[1]; E[e++] = b[2];
    }
  }
  var EC = new Float32Array(nq * 24), ec = DATA.edge_color;
  for (var z = 0; z < nq * 8; z++) { EC[3 * z] = ec[0]; EC[3 * z + 1] = ec[1]; EC[3 * z + 2] = ec[2]; }
  return { mesh: { P: P, N: N, C: C, n: nq * 6 }, edges: { P: E, C: EC, n: nq * 8 } };
}

function isoGeometry(vol, threshold, color) {
  // The threshold isosurface by marching tetrahedra (6 per cell, split along the cell's
  // 0-6 diagonal, so neighbouring cells agree); samples at voxel centres, empty outside the
  // volume so surfaces close; normals from the occupancy gradient (pointing outward).
  var D = vol.shape[0], H = vol.shape[1], W = vol.shape[2], occ = vol.data, lim = threshold * 255;
  var sx = vol.size[0] / W, sy = vol.size[1] / H, sz = vol.size[2] / D, lo = vol.lo;
  function val(i, j, k) {
    return (i < 0 || j < 0 || k < 0 || i >= W || j >= H || k >= D) ? 0 : occ[(k * H + j) * W + i];
  }
  var CORNER = [[0,0,0],[1,0,0],[1,1,0],[0,1,0],[0,0,1],[1,0,1],[1,1,1],[0,1,1]];
  var TETS = [[0,1,2,6],[0,2,3,6],[0,3,7,6],[0,7,4,6],[0,4,5,6],[0,5,1,6]];
  var P = [], N = [], v = new Float32Array(8), i, j, k;
  function point(a, b) {
    var ca = CORNER[a], cb = CORNER[b], t = (lim - v[a]) / (v[b] - v[a]), out = [];
    var ia = i + ca[0], ja = j + ca[1], ka = k + ca[2], ib = i + cb[0], jb = j + cb[1], kb = k + cb[2];
    var x = ia + t * (ib - ia), y = ja + t * (jb - ja), z = ka + t * (kb - ka);
    var g = [0, 0, 0], ga = [val(ia + 1, ja, ka) - val(ia - 1, ja, ka), val(ia, ja + 1, ka) - val(ia, ja - 1, ka),
             val(ia, ja, ka + 1) - val(ia, ja, ka - 1)],
        gb = [val(ib + 1, jb, kb) - val(ib - 1, jb, kb), val(ib, jb + 1, kb) - val(ib, jb - 1, kb),
              val(ib, jb, kb + 1) - val(ib, jb, kb - 1)];
    for (var d = 0; d < 3; d++) g[d] = -(ga[d] + t * (gb[d] - ga[d]));
    out.push(lo[0] + (x + 0.5) * sx, lo[1] + (y + 0.5) * sy, lo[2] + (z + 0.5) * sz);
    return [out, [g[0] / sx, g[1] / sy, g[2] / sz]];
  }
  function emit(p, q, r) {
    [p, q, r].forEach(function (e) {
      var n = e[1], l = Math.hypot(n[0], n[1], n[2]);
      if (!l) {  // flat gradient: the triangle's own normal
        var u = [q[0][0] - p[0][0], q[0][1] - p[0][1], q[0][2] - p[0][2]],
            w = [r[0][0] - p[0][0], r[0][1] - p[0][1], r[0][2] - p[0][2]];
        n = [u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0]];
        l = Math.hypot(n[0], n[1], n[2]) || 1;
      }
      P.push(e[0][0], e[0][1], e[0][2]); N.push(n[0] / l, n[1] / l, n[2] / l);
    });
  }
  for (k = -1; k < D; k++) for (j = -1; j < H; j++) for (i = -1; i < W; i++) {
    var nin = 0;
    for (var c = 0; c < 8; c++) {
      v[c] = val(i + CORNER[c][0], j + CORNER[c][1], k + CORNER[c][2]);
      if (v[c] > lim) nin++;
    }
    if (nin === 0 || nin === 8) continue;
    for (var t = 0; t < 6; t++) {
      var T = TETS[t], ins = [], outs = [];
      for (var m = 0; m < 4; m++) (v[T[m]] > lim ? ins : outs).push(T[m]);
      if (ins.length === 0 || ins.length === 4) continue;
      var pts = [];
      ins.forEach(function (a) { outs.forEach(function (b) { pts.push(point(a, b)); }); });
      if (pts.length === 3) emit(pts[0], pts[1], pts[2]);
      else { emit(pts[0], pts[1], pts[3]); emit(pts[0], pts[3], pts[2]); }
    }
  }
  var n = P.length / 3, C = new Float32Array(n * 3);
  for (var q = 0; q < n; q++) { C[3 * q] = color[0]; C[3 * q + 1] = color[1]; C[3 * q + 2] = color[2]; }
  return { P: new Float32Array(P), N: new Float32Array(N), C: C, n: n };
}

function decodeLines(l) {
  var P = f32(l.positions), cb = bytes(l.colors), n = P.length / 3, C = new Float32Array(n * 3);
  for (var s = 0; s < n / 2; s++) for (var d = 0; d < 3; d++) {
    C[6 * s + d] = cb[3 * s + d] / 255; C[6 * s + 3 + d] = cb[3 * s + d] / 255;
  }
  return { P: P, C: C, n: n };
}

function decodeImage(im) {
  // Ground truth (1 bit per pixel) and projected (8-bit) silhouettes, row 0 first; the
  // overlay picture is made for the current threshold.
  return { gt: im.ground_truth ? bytes(im.ground_truth) : null, pr: im.projected ? bytes(im.projected) : null,
           corners: im.corners, w: im.width, h: im.height, key: null, canvas: null };
}
function overlay(im) {
  // codes: 1 ground truth only, 2 projected only, 3 both -> an RGBA canvas (0: transparent)
  var key = Math.round(S.threshold * 1000);
  if (im.key === key) return im.canvas;
  var w = im.w, h = im.h, cv = document.createElement("canvas"), lim = S.threshold * 255;
  cv.width = w; cv.height = h;
  var ctx = cv.getContext("2d"), img = ctx.createImageData(w, h), pal = DATA.code_colors;
  for (var p = 0; p < w * h; p++) {
    var code = (im.gt && ((im.gt[p >> 3] >> (p & 7)) & 1) ? 1 : 0) + (im.pr && im.pr[p] > lim ? 2 : 0);
    if (!code) continue;
    img.data[4 * p] = pal[code][0]; img.data[4 * p + 1] = pal[code][1];
    img.data[4 * p + 2] = pal[code][2]; img.data[4 * p + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  im.key = key; im.canvas = cv;
  return cv;
}

var LAYERS = [];  // {kind: mesh | volume | lines | image, role, gt, geometry}
DATA.meshes.forEach(function (m) { LAYERS.push({ kind: "mesh", role: "iso", gt: m.ground_truth, g: decodeMesh(m) }); });
DATA.volumes.forEach(function (v) {
  LAYERS.push({ kind: "volume", role: "volume", gt: v.ground_truth, iso: v.isosurface, color: v.color,
    vol: { shape: v.shape, data: v.bits ? unpackBits(bytes(v.data), v.shape[0] * v.shape[1] * v.shape[2]) : bytes(v.data),
           lo: v.lo, size: v.size }, cache: {} });
});
DATA.lines.forEach(function (l) { LAYERS.push({ kind: "lines", role: l.role, gt: l.ground_truth, g: decodeLines(l) }); });
DATA.images.forEach(function (im) { LAYERS.push({ kind: "image", role: "silhouettes", gt: false, g: decodeImage(im) }); });

function cached(layer, what, make) {
  var key = what + Math.round(S.threshold * 1000);
  if (!(key in layer.cache)) {
    for (var old in layer.cache) if (old.indexOf(what) === 0) delete layer.cache[old];
    layer.cache[key] = make();
  }
  return layer.cache[key];
}
function voxelsOf(L) { return cached(L, "voxels", function () { return voxelGeometry(L.vol, S.threshold); }); }
function isoOf(L) { return cached(L, "iso", function () { return isoGeometry(L.vol, S.threshold, L.color); }); }

// What to draw now: lists of triangle soups, line lists and images.
function visible() {
  var tris = [], lines = [], images = [];
  LAYERS.forEach(function (L) {
    if (L.gt && !S.gt) return;
    if (L.kind === "mesh" && S.mode !== "voxels") tris.push(L.g);
    if (L.kind === "volume" && L.iso && S.mode !== "voxels") tris.push(isoOf(L));
    if (L.kind === "volume" && S.mode === "voxels") tris.push(voxelsOf(L).mesh);
    if (L.kind === "volume" && S.mode === "both") lines.push(voxelsOf(L).edges);
    if (L.kind === "lines" && ((L.role === "box" && S.box) || (L.role === "cameras" && S.cams))) lines.push(L.g);
    if (L.kind === "image" && S.sils) images.push(L.g);
  });
  return { tris: tris, lines: lines, images: images };
}

// ---- the camera (persp3d orbit convention) -----------------------------------------------
var canvas = document.getElementById("view");
function camera() {
  var W = canvas.width, H = canvas.height, a = S.az * Math.PI / 180, e = S.el * Math.PI / 180;
  var o = [Math.cos(e) * Math.sin(a), Math.sin(e), Math.cos(e) * Math.cos(a)], F = FRAME, eye = [0, 0, 0];
  for (var i = 0; i < 3; i++) eye[i] = S.target[i] + S.dist * (F[i][0] * o[0] + F[i][1] * o[1] + F[i][2] * o[2]);
  var up = [F[0][1], F[1][1], F[2][1]];  // the frame's y column: the world's up
  var fw = [S.target[0] - eye[0], S.target[1] - eye[1], S.target[2] - eye[2]];
  var fl = Math.hypot(fw[0], fw[1], fw[2]); fw = [fw[0] / fl, fw[1] / fl, fw[2] / fl];
  var rt = [fw[1] * up[2] - fw[2] * up[1], fw[2] * up[0] - fw[0] * up[2], fw[0] * up[1] - fw[1] * up[0]];  // forward x up
  var rl = Math.hypot(rt[0], rt[1], rt[2]) || 1; rt = [rt[0] / rl, rt[1] / rl, rt[2] / rl];
  var dn = [fw[1] * rt[2] - fw[2] * rt[1], fw[2] * rt[0] - fw[0] * rt[2], fw[0] * rt[1] - fw[1] * rt[0]];
  var R = [rt, dn, fw], t = [0, 0, 0];
  for (var r = 0; r < 3; r++) t[r] = -(R[r][0] * eye[0] + R[r][1] * eye[1] + R[r][2] * eye[2]);
  var f = H / 2 / Math.tan(S.fov * Math.PI / 360), cx = W / 2, cy = H / 2;
  var near = Math.max(S.dist - 3 * DATA.radius, S.dist * 0.01), far = S.dist + 3 * DATA.radius;
  return { R: R, t: t, f: f, cx: cx, cy: cy, W: W, H: H, near: near, far: far };
}
function toCam(c, x, y, z) {
  var R = c.R;
  return [R[0][0] * x + R[0][1] * y + R[0][2] * z + c.t[0], R[1][0] * x + R[1][1] * y + R[1][2] * z + c.t[1],
          R[2][0] * x + R[2][1] * y + R[2][2] * z + c.t[2]];
}
var LIGHT = (function () { var l = [-0.35, -0.55, -1.0], n = Math.hypot(l[0], l[1], l[2]); return [l[0] / n, l[1] / n, l[2] / n]; })();

// ---- WebGL renderer ---------------------------------------------------------------------
function webglRenderer(gl) {
  function shader(type, src) {
    var s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  }
  function program(vs, fs) {
    var p = gl.createProgram();
    gl.attachShader(p, shader(gl.VERTEX_SHADER, vs)); gl.attachShader(p, shader(gl.FRAGMENT_SHADER, fs));
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
    return p;
  }
  var HEAD = "precision highp float; uniform mat4 uM; uniform mat3 uR; uniform vec3 uT;";
  var tri = program(HEAD +
    "attribute vec3 aP; attribute vec3 aN; attribute vec3 aC; varying vec3 vN; varying vec3 vC; varying vec3 vX;" +
    "void main() { vN = uR * aN; vC = aC; vX = uR * aP + uT; gl_Position = uM * vec4(aP, 1.0); }",
    "precision mediump float; uniform vec3 uL; varying vec3 vN; varying vec3 vC; varying vec3 vX;" +
    "void main() { vec3 n = normalize(vN); if (dot(n, vX) > 0.0) n = -n;" +
    " float s = 0.32 + 0.68 * max(dot(n, uL), 0.0); gl_FragColor = vec4(vC * s, 1.0); }");
  var lin = program(HEAD + "attribute vec3 aP; attribute vec3 aC; varying vec3 vC;" +
    "void main() { vC = aC; gl_Position = uM * vec4(aP, 1.0); }",
    "precision mediump float; varying vec3 vC; void main() { gl_FragColor = vec4(vC, 1.0); }");
  var tex = program(HEAD + "attribute vec3 aP; attribute vec2 aU; varying vec2 vU;" +
    "void main() { vU = aU; gl_Position = uM * vec4(aP, 1.0); }",
    "precision mediump float; uniform sampler2D uS; varying vec2 vU;" +
    "void main() { vec4 c = texture2D(uS, vU); if (c.a < 0.5) discard; gl_FragColor = vec4(c.rgb, 1.0); }");
  var buffers = new Map(), textures = new Map();
  function buf(arr) {
    var b = buffers.get(arr);
    if (!b) { b = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, b); gl.bufferData(gl.ARRAY_BUFFER, arr, gl.STATIC_DRAW); buffers.set(arr, b); }
    return b;
  }
  function attr(prog, name, arr, size) {
    var loc = gl.getAttribLocation(prog, name);
    gl.bindBuffer(gl.ARRAY_BUFFER, buf(arr)); gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, size, gl.FLOAT, false, 0, 0);
    return loc;
  }
  function uniforms(prog, c) {
    var R = c.R, W = c.W, H = c.H, n = c.near, f = c.far;
    // clip = P [R | t]: x_ndc = 2u/W - 1, y_ndc = 1 - 2v/H (row 0 at the top), z in [n, f].
    var P = [[2 * c.f / W, 0, 2 * c.cx / W - 1, 0], [0, -2 * c.f / H, 1 - 2 * c.cy / H, 0],
             [0, 0, (f + n) / (f - n), -2 * f * n / (f - n)], [0, 0, 1, 0]];
    var E = [[R[0][0], R[0][1], R[0][2], c.t[0]], [R[1][0], R[1][1], R[1][2], c.t[1]],
             [R[2][0], R[2][1], R[2][2], c.t[2]], [0, 0, 0, 1]];
    var M = new Float32Array(16);
    for (var i = 0; i < 4; i++) for (var j = 0; j < 4; j++) {
      var s = 0; for (var k = 0; k < 4; k++) s += P[i][k] * E[k][j];
      M[j * 4 + i] = s;  // column-major
    }
    gl.uniformMatrix4fv(gl.getUniformLocation(prog, "uM"), false, M);
    var Rm = new Float32Array([R[0][0], R[1][0], R[2][0], R[0][1], R[1][1], R[2][1], R[0][2], R[1][2], R[2][2]]);
    var lr = gl.getUniformLocation(prog, "uR"); if (lr) gl.uniformMatrix3fv(lr, false, Rm);
    var lt = gl.getUniformLocation(prog, "uT"); if (lt) gl.uniform3fv(lt, c.t);
  }
  function texture(im) {
    var cv = overlay(im), t = textures.get(im);
    if (!t || t.canvas !== cv) {
      if (t) gl.deleteTexture(t.tex);
      t = { tex: gl.createTexture(), canvas: cv }; gl.bindTexture(gl.TEXTURE_2D, t.tex);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, cv);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
      var k = im.corners;  // top-left, top-right, bottom-right, bottom-left (image row 0 on top)
      im.quad = new Float32Array([].concat(k[0], k[1], k[2], k[0], k[2], k[3]));
      im.uv = new Float32Array([0, 0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1]);
      textures.set(im, t);
    }
    return t.tex;
  }
  var bg = DATA.background;
  return function draw(c, vis) {
    gl.viewport(0, 0, c.W, c.H);
    gl.clearColor(bg[0], bg[1], bg[2], 1); gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    gl.enable(gl.POLYGON_OFFSET_FILL); gl.polygonOffset(1, 1);
    gl.useProgram(tri); uniforms(tri, c); gl.uniform3fv(gl.getUniformLocation(tri, "uL"), LIGHT);
    vis.tris.forEach(function (g) {
      if (!g.n) return;
      var a = [attr(tri, "aP", g.P, 3), attr(tri, "aN", g.N, 3), attr(tri, "aC", g.C, 3)];
      gl.drawArrays(gl.TRIANGLES, 0, g.n);
      a.forEach(function (l) { gl.disableVertexAttribArray(l); });
    });
    gl.useProgram(tex); uniforms(tex, c);
    vis.images.forEach(function (im) {
      gl.activeTexture(gl.TEXTURE0); gl.bindTexture(gl.TEXTURE_2D, texture(im));
      gl.uniform1i(gl.getUniformLocation(tex, "uS"), 0);
      var a = [attr(tex, "aP", im.quad, 3), attr(tex, "aU", im.uv, 2)];
      gl.drawArrays(gl.TRIANGLES, 0, 6);
      a.forEach(function (l) { gl.disableVertexAttribArray(l); });
    });
    gl.disable(gl.POLYGON_OFFSET_FILL);
    gl.useProgram(lin); uniforms(lin, c);
    vis.lines.forEach(function (g) {
      if (!g.n) return;
      var a = [attr(lin, "aP", g.P, 3), attr(lin, "aC", g.C, 3)];
      gl.drawArrays(gl.LINES, 0, g.n);
      a.forEach(function (l) { gl.disableVertexAttribArray(l); });
    });
  };
}

// ---- 2D canvas renderer (no WebGL): software projection, painter's algorithm ------------
function canvasRenderer(ctx) {
  function rgb(c, s) {
    return "rgb(" + Math.round(255 * Math.min(1, c[0] * s)) + "," + Math.round(255 * Math.min(1, c[1] * s)) +
      "," + Math.round(255 * Math.min(1, c[2] * s)) + ")";
  }
  return function draw(c, vis) {
    var bg = DATA.background, prims = [];
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = rgb(bg, 1); ctx.fillRect(0, 0, c.W, c.H);
    function proj(p) { return [c.f * p[0] / p[2] + c.cx, c.f * p[1] / p[2] + c.cy]; }
    vis.tris.forEach(function (g) {
      var P = g.P, C = g.C;
      for (var v = 0; v < g.n; v += 3) {
        var q = [], ok = true;
        for (var k = 0; k < 3; k++) {
          var o = 3 * (v + k), pc = toCam(c, P[o], P[o + 1], P[o + 2]);
          if (pc[2] <= c.near) { ok = false; break; }
          q.push(pc);
        }
        if (!ok) continue;
        var ux = q[1][0] - q[0][0], uy = q[1][1] - q[0][1], uz = q[1][2] - q[0][2];
        var wx = q[2][0] - q[0][0], wy = q[2][1] - q[0][1], wz = q[2][2] - q[0][2];
        var n = [uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx], nl = Math.hypot(n[0], n[1], n[2]) || 1;
        n = [n[0] / nl, n[1] / nl, n[2] / nl];
        if (n[0] * q[0][0] + n[1] * q[0][1] + n[2] * q[0][2] > 0) n = [-n[0], -n[1], -n[2]];
        var s = 0.32 + 0.68 * Math.max(0, n[0] * LIGHT[0] + n[1] * LIGHT[1] + n[2] * LIGHT[2]);
        var o3 = 3 * v, col = [(C[o3] + C[o3 + 3] + C[o3 + 6]) / 3, (C[o3 + 1] + C[o3 + 4] + C[o3 + 7]) / 3,
                               (C[o3 + 2] + C[o3 + 5] + C[o3 + 8]) / 3];
        prims.push({ z: (q[0][2] + q[1][2] + q[2][2]) / 3, t: 0, p: [proj(q[0]), proj(q[1]), proj(q[2])], c: rgb(col, s) });
      }
    });
    vis.lines.forEach(function (g) {
      var P = g.P, C = g.C;
      for (var v = 0; v < g.n; v += 2) {
        var a = toCam(c, P[3 * v], P[3 * v + 1], P[3 * v + 2]), b = toCam(c, P[3 * v + 3], P[3 * v + 4], P[3 * v + 5]);
        if (a[2] <= c.near || b[2] <= c.near) continue;
        prims.push({ z: (a[2] + b[2]) / 2 - 1e-3 * DATA.radius, t: 1, p: [proj(a), proj(b)],
                     c: rgb([C[3 * v], C[3 * v + 1], C[3 * v + 2]], 1) });
      }
    });
    vis.images.forEach(function (im) {
      var k = im.corners.map(function (p) { return toCam(c, p[0], p[1], p[2]); });
      if (k.some(function (p) { return p[2] <= c.near; })) return;
      var src = [[0, 0], [im.w, 0], [im.w, im.h], [0, im.h]], scr = k.map(proj);
      [[0, 1, 2], [0, 2, 3]].forEach(function (t) {
        prims.push({ z: (k[t[0]][2] + k[t[1]][2] + k[t[2]][2]) / 3, t: 2, im: im,
                     s: t.map(function (i) { return src[i]; }), p: t.map(function (i) { return scr[i]; }) });
      });
    });
    prims.sort(function (a, b) { return b.z - a.z; });
    ctx.lineJoin = "round"; ctx.imageSmoothingEnabled = false;
    prims.forEach(function (q) {
      var p = q.p;
      if (q.t === 0) {
        ctx.beginPath(); ctx.moveTo(p[0][0], p[0][1]); ctx.lineTo(p[1][0], p[1][1]); ctx.lineTo(p[2][0], p[2][1]);
        ctx.closePath(); ctx.fillStyle = q.c; ctx.strokeStyle = q.c; ctx.lineWidth = 0.7; ctx.fill(); ctx.stroke();
      } else if (q.t === 1) {
        ctx.beginPath(); ctx.moveTo(p[0][0], p[0][1]); ctx.lineTo(p[1][0], p[1][1]);
        ctx.strokeStyle = q.c; ctx.lineWidth = 1; ctx.stroke();
      } else {
        // affine map from image pixels to the screen triangle
        var s0 = q.s[0], s1 = q.s[1], s2 = q.s[2], d0 = p[0], d1 = p[1], d2 = p[2];
        var den = (s1[0] - s0[0]) * (s2[1] - s0[1]) - (s2[0] - s0[0]) * (s1[1] - s0[1]);
        var a = ((d1[0] - d0[0]) * (s2[1] - s0[1]) - (d2[0] - d0[0]) * (s1[1] - s0[1])) / den;
        var cc = ((d2[0] - d0[0]) * (s1[0] - s0[0]) - (d1[0] - d0[0]) * (s2[0] - s0[0])) / den;
        var b = ((d1[1] - d0[1]) * (s2[1] - s0[1]) - (d2[1] - d0[1]) * (s1[1] - s0[1])) / den;
        var d = ((d2[1] - d0[1]) * (s1[0] - s0[0]) - (d1[1] - d0[1]) * (s2[0] - s0[0])) / den;
        ctx.save();
        ctx.beginPath(); ctx.moveTo(d0[0], d0[1]); ctx.lineTo(d1[0], d1[1]); ctx.lineTo(d2[0], d2[1]); ctx.closePath();
        ctx.clip();
        ctx.setTransform(a, b, cc, d, d0[0] - a * s0[0] - cc * s0[1], d0[1] - b * s0[0] - d * s0[1]);
        ctx.drawImage(overlay(q.im), 0, 0);
        ctx.restore();
      }
    });
  };
}

// ---- wiring ----------------------------------------------------------------------------
var gl = null;
if (HASH.renderer !== "canvas") {
  try { gl = canvas.getContext("webgl", { antialias: true, preserveDrawingBuffer: true }) ||
             canvas.getContext("experimental-webgl", { preserveDrawingBuffer: true }); } catch (err) { gl = null; }
}
var draw = null, rendererName = "";
if (gl) {
  try { draw = webglRenderer(gl); rendererName = "WebGL"; } catch (err) { draw = null; }
}
if (!draw) {
  canvas = canvas.cloneNode(false);  // a canvas that had a WebGL context cannot give a 2D one
  var old = document.getElementById("view"); old.parentNode.replaceChild(canvas, old);
  draw = canvasRenderer(canvas.getContext("2d")); rendererName = "2D canvas (no WebGL)";
}
document.body.setAttribute("data-renderer", rendererName);

function render() {
  var dpr = window.devicePixelRatio || 1;
  var W = Math.max(1, Math.round(window.innerWidth * dpr)), H = Math.max(1, Math.round(window.innerHeight * dpr));
  if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
  draw(camera(), visible());
}
var pending = false;
function redraw() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(function () { pending = false; render(); });
}

var $ = function (id) { return document.getElementById(id); };
function syncPanel() {
  $("mode").value = S.mode; $("threshold").value = S.threshold; $("thvalue").textContent = S.threshold.toFixed(2);
  $("gt").checked = S.gt; $("cams").checked = S.cams; $("sils").checked = S.sils; $("box").checked = S.box;
}
$("title").textContent = DATA.title;
$("renderer").textContent = "renderer: " + rendererName;
var pal = DATA.code_colors;
[1, 2, 3].forEach(function (k) { $("sw" + k).style.background = "rgb(" + pal[k].join(",") + ")"; });
$("bar").style.background = "linear-gradient(to right," + VIRIDIS.map(function (c) {
  return "rgb(" + c.map(function (x) { return Math.round(255 * x); }).join(",") + ")"; }).join(",") + ")";
if (DATA.has_silhouettes === false) {  // nothing to compare with: the projection alone
  $("lg1").style.display = "none"; $("lg3").style.display = "none";
  $("sw2").style.marginLeft = "0"; $("lb2").textContent = "projection (no ground truth)";
}
if (!DATA.has_ground_truth) $("gt").parentNode.style.display = "none";
if (!DATA.has_cameras) { $("cams").parentNode.style.display = "none"; $("sils").parentNode.style.display = "none"; }
if (!flag("ui", DATA.ui)) $("panel").style.display = "none";
syncPanel();
$("mode").onchange = function () { S.mode = this.value; redraw(); };
$("threshold").oninput = function () { S.threshold = parseFloat(this.value); syncPanel(); redraw(); };
[["gt", "gt"], ["cams", "cams"], ["sils", "sils"], ["box", "box"]].forEach(function (p) {
  $(p[0]).onchange = function () { S[p[1]] = this.checked; redraw(); };
});

var drag = null;
canvas.addEventListener("pointerdown", function (ev) {
  drag = { x: ev.clientX, y: ev.clientY, pan: ev.shiftKey || ev.button === 2 };
  canvas.setPointerCapture(ev.pointerId);
});
canvas.addEventListener("pointerup", function () { drag = null; });
canvas.addEventListener("contextmenu", function (ev) { ev.preventDefault(); });
canvas.addEventListener("pointermove", function (ev) {
  if (!drag) return;
  var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
  drag.x = ev.clientX; drag.y = ev.clientY;
  if (drag.pan) {
    var c = camera(), k = S.dist / c.f * (window.devicePixelRatio || 1);
    for (var d = 0; d < 3; d++) S.target[d] -= k * (dx * c.R[0][d] + dy * c.R[1][d]);
  } else {
    S.az -= 0.4 * dx; S.el = Math.max(-89, Math.min(89, S.el + 0.4 * dy));
  }
  redraw();
});
canvas.addEventListener("wheel", function (ev) {
  ev.preventDefault(); S.dist *= Math.pow(1.0015, ev.deltaY); redraw();
}, { passive: false });
window.addEventListener("resize", redraw);
window.addEventListener("keydown", function (ev) {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
  var k = ev.key.toLowerCase(), modes = ["iso", "voxels", "both"];
  if (k === "v") S.mode = modes[(modes.indexOf(S.mode) + 1) % 3];
  else if (k === "[") S.threshold = Math.max(0.01, Math.round((S.threshold - 0.05) * 100) / 100);
  else if (k === "]") S.threshold = Math.min(0.99, Math.round((S.threshold + 0.05) * 100) / 100);
  else if (k === "g") S.gt = !S.gt;
  else if (k === "c") S.cams = !S.cams;
  else if (k === "i") S.sils = !S.sils;
  else if (k === "b") S.box = !S.box;
  else if (k === "r") { S.az = V0.azimuth; S.el = V0.elevation; S.dist = V0.distance; S.target = V0.target.slice(); }
  else return;
  syncPanel(); redraw();
});
render();  // draw once now, so the first paint (and a headless screenshot) shows the scene
})();
</script>
</body>
</html>
"""
