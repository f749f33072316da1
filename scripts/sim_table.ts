/**
 * `deno run --allow-read --allow-write scripts/sim_table.ts`: writes the
 * simulation table of bench/results/sim-latest.json into the README,
 * between its `<!-- sim-table -->` markers, with the date of each row's run.
 *
 * @module
 */

import { type Row, table } from "../src/sim/report.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const rows: (Row & { date?: string })[] =
  JSON.parse(await Deno.readTextFile(`${ROOT}/bench/results/sim-latest.json`)).rows;
const dates = [...new Set(rows.map((r) => r.date?.slice(0, 16).replace("T", " ") ?? "?"))];
const text = table(rows) + `\n\nRows from runs on ${dates.join(", ")} (UTC).`;
const readme = await Deno.readTextFile(`${ROOT}/README.md`);
const start = readme.indexOf("<!-- sim-table -->");
const end = readme.indexOf("<!-- /sim-table -->");
if (start < 0 || end < start) throw new Error("README has no <!-- sim-table --> markers");
await Deno.writeTextFile(
  `${ROOT}/README.md`,
  `${readme.slice(0, start)}<!-- sim-table -->\n\n${text}\n\n${readme.slice(end)}`,
);
console.log(`README: ${rows.length} simulation rows`);
