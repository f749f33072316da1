/**
 * nginx as the reference server of the benchmarks: one worker, sendfile,
 * no access log, serving one directory on a free loopback port.
 *
 * @module
 */

import { sleep } from "./_harness.ts";

/** A running nginx. */
export interface BenchNginx extends AsyncDisposable {
  url: string;
  /** The master and its workers (for CPU accounting). */
  pids(): number[];
}

/** Starts nginx serving `root` (configuration and pid file under `dir`). */
export async function startNginx(dir: string, root: string): Promise<BenchNginx> {
  await Deno.mkdir(dir, { recursive: true });
  const port = 18000 + Math.floor(Math.random() * 1000);
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    `worker_processes 1;\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\n` +
      `events { worker_connections 1024; }\nhttp {\n  access_log off;\n  sendfile on;\n` +
      `  tcp_nopush on;\n  keepalive_requests 1000000;\n` +
      `  server { listen 127.0.0.1:${port}; root ${root}; }\n}\n`,
  );
  const child = new Deno.Command("nginx", {
    args: ["-c", `${dir}/nginx.conf`],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`${url}/`).catch(() => null);
    await r?.body?.cancel();
    if (r) break;
    await sleep(50);
  }
  return {
    url,
    pids: () => [child.pid, ...childrenOf(child.pid)],
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    },
  };
}

/** Direct children of `pid`, from /proc. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(entry.name));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}
