/**
 * What `deno task sim` prints and writes: a table, one JSON object per
 * scenario, and a plot (SVG) of the time to hold the snapshot against the
 * fleet's size.
 *
 * @module
 */

import type { FleetResult } from "./fleet.ts";

/** A result relative to one node alone. */
export interface Row {
  scenario: string;
  nodes: number;
  /** Times to hold the whole snapshot, relative to one node alone. */
  p50: number;
  p99: number;
  max: number;
  /** Origin bytes / non-zero bytes. */
  origin: number;
  completed: number;
  failed: number;
  killed: number;
  uploaders: number;
  hottestShare: number;
  crossZone: number;
  badChunks: number;
  /** Seconds: one node alone, and this run's p50 and p99. */
  seconds: { alone: number; p50: number; p99: number; max: number };
  events: number;
  wallSeconds: number;
  failures: string[];
}

/** `result` relative to `alone` seconds. */
export function toRow(result: FleetResult, alone: number): Row {
  return {
    scenario: result.scenario,
    nodes: result.nodes,
    p50: result.seconds.p50 / alone,
    p99: result.seconds.p99 / alone,
    max: result.seconds.max / alone,
    origin: result.origin,
    completed: result.completed,
    failed: result.failed,
    killed: result.killed,
    uploaders: result.uploaders,
    hottestShare: result.hottestShare,
    crossZone: result.crossZone,
    badChunks: result.badChunks,
    seconds: { alone, ...result.seconds },
    events: result.events,
    wallSeconds: result.wallSeconds,
    failures: result.failures,
  };
}

/** The JSON line of a row (the fields first). */
export function jsonLine(row: Row): string {
  const round = (x: number, digits = 3) => Number(x.toFixed(digits));
  return JSON.stringify({
    scenario: row.scenario,
    nodes: row.nodes,
    p50: round(row.p50),
    p99: round(row.p99),
    max: round(row.max),
    origin: round(row.origin),
    completed: row.completed,
    failed: row.failed,
    uploaders: row.uploaders,
    hottestShare: round(row.hottestShare, 4),
    killed: row.killed,
    crossZone: round(row.crossZone),
    badChunks: row.badChunks,
    seconds: {
      alone: round(row.seconds.alone),
      p50: round(row.seconds.p50),
      p99: round(row.seconds.p99),
      max: round(row.seconds.max),
    },
    events: row.events,
    wallSeconds: round(row.wallSeconds, 1),
    failures: row.failures,
  });
}

/** A markdown table of the rows. */
export function table(rows: Row[]): string {
  const header = [
    "scenario",
    "nodes",
    "p50",
    "p99",
    "max",
    "origin",
    "completed",
    "failed",
    "killed",
    "uploaders",
    "hottest",
    "cross-zone",
    "wall s",
  ];
  const body = rows.map((r) => [
    r.scenario,
    String(r.nodes),
    `${r.p50.toFixed(2)}×`,
    `${r.p99.toFixed(2)}×`,
    `${r.max.toFixed(2)}×`,
    `${r.origin.toFixed(3)}×`,
    String(r.completed),
    String(r.failed),
    String(r.killed),
    String(r.uploaders),
    `${(100 * r.hottestShare).toFixed(1)}%`,
    `${r.crossZone.toFixed(1)}×`,
    r.wallSeconds.toFixed(0),
  ]);
  const all = [header, ...body];
  const widths = header.map((_, i) => Math.max(...all.map((row) => row[i]!.length)));
  const line = (row: string[]) => `| ${row.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...body.map(line)]
    .join("\n");
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/**
 * A plot of p99 (solid) and p50 (dashed, baseline only) time to hold the
 * snapshot, relative to one node alone, against the number of nodes (log
 * scale), one line per scenario, with the 2× target.
 */
export function plot(rows: Row[], title: string): string {
  const width = 720;
  const height = 420;
  const margin = { left: 64, right: 180, top: 40, bottom: 52 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const sizes = [...new Set(rows.map((r) => r.nodes))].sort((a, b) => a - b);
  const minN = Math.min(...sizes);
  const maxN = Math.max(...sizes, minN * 2);
  const yMax = Math.max(2.5, ...rows.map((r) => (Number.isFinite(r.p99) ? r.p99 : 0))) * 1.1;
  const x = (n: number) => margin.left + (Math.log(n / minN) / Math.log(maxN / minN)) * plotW;
  const y = (v: number) => margin.top + plotH - (v / yMax) * plotH;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
      `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${margin.left}" y="22" font-size="14">${escape(title)}</text>`,
  );
  // Axes and grid.
  for (let v = 0; v <= yMax; v += yMax > 6 ? 1 : 0.5) {
    out.push(
      `<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${y(v)}" y2="${y(v)}" ` +
        `stroke="#ddd"/>`,
      `<text x="${margin.left - 8}" y="${y(v) + 4}" text-anchor="end">${v}×</text>`,
    );
  }
  for (const n of sizes) {
    out.push(
      `<line x1="${x(n)}" x2="${x(n)}" y1="${margin.top}" y2="${margin.top + plotH}" ` +
        `stroke="#eee"/>`,
      `<text x="${x(n)}" y="${margin.top + plotH + 18}" text-anchor="middle">${n}</text>`,
    );
  }
  out.push(
    `<text x="${margin.left + plotW / 2}" y="${height - 12}" text-anchor="middle">` +
      `nodes pulling at once (log scale)</text>`,
    `<text transform="translate(16 ${margin.top + plotH / 2}) rotate(-90)" ` +
      `text-anchor="middle">time to hold the snapshot ÷ one node alone</text>`,
    `<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${y(2)}" y2="${y(2)}" ` +
      `stroke="#888" stroke-dasharray="6 4"/>`,
    `<text x="${margin.left + plotW - 4}" y="${y(2) - 6}" text-anchor="end" fill="#666">` +
      `target: p99 ≤ 2×</text>`,
  );
  const scenarios = [...new Set(rows.map((r) => r.scenario))];
  const series: { label: string; color: string; dash: boolean; points: [number, number][] }[] = [];
  scenarios.forEach((name, i) => {
    const color = COLORS[i % COLORS.length]!;
    const mine = rows.filter((r) => r.scenario === name).sort((a, b) => a.nodes - b.nodes);
    series.push({
      label: `${name} p99`,
      color,
      dash: false,
      points: mine.filter((r) => Number.isFinite(r.p99)).map((r) => [r.nodes, r.p99]),
    });
    if (name === "baseline") {
      series.push({
        label: `${name} p50`,
        color,
        dash: true,
        points: mine.filter((r) => Number.isFinite(r.p50)).map((r) => [r.nodes, r.p50]),
      });
    }
  });
  series.forEach((s, i) => {
    const path = s.points.map(([n, v], k) => `${k === 0 ? "M" : "L"}${x(n)},${y(v)}`).join(" ");
    out.push(
      `<path d="${path}" fill="none" stroke="${s.color}" stroke-width="2"` +
        `${s.dash ? ' stroke-dasharray="5 3"' : ""}/>`,
    );
    for (const [n, v] of s.points) {
      out.push(`<circle cx="${x(n)}" cy="${y(v)}" r="3" fill="${s.color}"/>`);
    }
    const ly = margin.top + 10 + i * 18;
    const lx = margin.left + plotW + 16;
    out.push(
      `<line x1="${lx}" x2="${lx + 22}" y1="${ly}" y2="${ly}" stroke="${s.color}" ` +
        `stroke-width="2"${s.dash ? ' stroke-dasharray="5 3"' : ""}/>`,
      `<text x="${lx + 28}" y="${ly + 4}">${escape(s.label)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
