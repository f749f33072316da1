/**
 * The status page at `/`, in headless Chromium (Debian's, driven by
 * playwright-core): it asks for the token, then shows the node, the cache
 * bar, the snapshots, the peers and a pull whose progress moves while we
 * watch. The page must raise no console error (a CSP violation would).
 * Screenshots go to a temp directory, never into the checkout: kept, with
 * their path printed, when the test fails, or in $SNAPMESH_TEST_ARTIFACTS
 * when that is set (to refresh docs/status.png by hand).
 */

import { chromium } from "playwright-core";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { startCluster } from "../helpers/cluster.ts";
import { CHUNK, memFile, publish, TOKEN } from "../helpers/fixtures.ts";
import { tempDir } from "../helpers/temp.ts";

// Callbacks below run in the page, where `document` exists.
// deno-lint-ignore no-explicit-any
declare const document: any;

const CHROMIUM = Deno.env.get("SNAPMESH_CHROMIUM") ?? "/usr/bin/chromium";
const haveChromium = (() => {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
})();
if (!haveChromium) {
  console.warn(
    `status page test skipped: no Chromium at ${CHROMIUM} (apt-get install chromium, ` +
      `or set SNAPMESH_CHROMIUM); .ci/run installs it`,
  );
}

Deno.test({
  name: "status page: token prompt, node, cache, snapshots, peers and a live pull in Chromium",
  ignore: !haveChromium,
  async fn() {
    await using tmp = await tempDir();
    await using cluster = await startCluster({
      ids: ["a", "b"],
      dir: tmp.path,
      // A serves slowly, so B's pull is still running while we look.
      args: (id) => [
        "--chunk-size",
        "256KiB",
        ...(id === "a" ? ["--max-egress", "1MB"] : ["--cache-size", "32MiB"]),
      ],
    });
    const a = cluster.get("a");
    const b = cluster.get("b");
    const mem = memFile(48, 7); // 12 MiB, some zero chunks
    await publish(a, "fn-big", { mem });
    // B holds a pinned snapshot of its own.
    await publish(b, "fn-local", { mem: memFile(4, 8), info: new TextEncoder().encode("{}") });
    const pin = await fetch(`${b.url}/v1/snapshots/fn-local/pin`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${TOKEN}` },
    });
    assertEquals(pin.status, 200);

    const wanted = Deno.env.get("SNAPMESH_TEST_ARTIFACTS");
    const artifacts = wanted ?? await Deno.makeTempDir({ prefix: "snapmesh-status-page-" });
    await Deno.mkdir(artifacts, { recursive: true });
    let failed = true;
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    let page: Awaited<ReturnType<typeof browser.newPage>> | null = null;
    try {
      page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const problems: string[] = [];
      page.on("console", (m) => {
        // The first /v1 requests answer 401 before the token is given: expected.
        if (m.type() === "error" && !/401/.test(m.text())) problems.push(m.text());
      });
      page.on("pageerror", (e) => problems.push(String(e)));

      const response = await page.goto(b.url + "/");
      assertEquals(response?.status(), 200);
      assertMatch(response!.headers()["content-security-policy"] ?? "", /script-src 'sha256-/);

      // Without the token: the prompt, and nothing else filled in.
      await page.locator("#login").waitFor({ state: "visible", timeout: 10_000 });
      assertMatch(await page.textContent("#conn") ?? "", /token required/);
      await page.fill("#token", "wrong-token");
      await page.click("#login-form button");
      await page.waitForFunction(
        () => /refused/.test(document.getElementById("login-message").textContent ?? ""),
        null,
        { timeout: 10_000 },
      );
      await page.fill("#token", TOKEN);
      await page.click("#login-form button");
      await page.locator("#login").waitFor({ state: "hidden", timeout: 10_000 });
      assertEquals(await page.textContent("#node"), "b");
      assertEquals(
        await page.evaluate(() => localStorage.getItem("snapmesh.token")),
        TOKEN,
        "token kept for the next visit",
      );

      // Peers: A, up.
      await page.locator('#peers tr[data-peer="a"]').waitFor({ timeout: 10_000 });
      assertMatch(await page.textContent('#peers tr[data-peer="a"]') ?? "", /up/);

      // A pull on B (not awaited): its progress appears and moves.
      const pulling = fetch(`${b.url}/v1/snapshots/fn-big/pull`, {
        method: "POST",
        headers: { Authorization: `Bearer ${TOKEN}` },
      }).then((r) => r.json());
      // Awaited below; a failure before that must not end the test as "uncaught".
      pulling.catch(() => {});
      const row = page.locator('#pulls [data-pull="fn-big"]');
      await row.waitFor({ timeout: 10_000 });
      const percent = async () => {
        const text = await row.locator(".figures").textContent() ?? "";
        return Number(/(\d+)%/.exec(text)?.[1] ?? NaN);
      };
      const first = await percent();
      await page.waitForFunction(
        (before) => {
          const text = document.querySelector('#pulls [data-pull="fn-big"] .figures')
            ?.textContent ?? "";
          return Number(/(\d+)%/.exec(text)?.[1] ?? -1) > before;
        },
        first,
        { timeout: 15_000 },
      );
      assertMatch(await row.textContent() ?? "", /peer \d/);
      // The event stream opens after a good refresh; the label follows at the next one.
      await page.waitForFunction(
        () => /live/.test(document.getElementById("conn")?.textContent ?? ""),
        null,
        { timeout: 10_000 },
      );
      // Screenshot mid-pull, for a human to look at.
      await page.screenshot({ path: `${artifacts}/status.png`, fullPage: true });

      const result = await pulling;
      assert(result.bytes?.peer > 0, JSON.stringify(result));
      // Once done: listed among the snapshots, the pull marked done.
      await page.locator('#snapshots tr[data-name="fn-big"]').waitFor({ timeout: 10_000 });
      await page.waitForFunction(
        () =>
          /done/.test(
            document.querySelector('#pulls [data-pull="fn-big"]')?.textContent ?? "",
          ),
        null,
        { timeout: 10_000 },
      );
      const snapshots = await page.textContent("#snapshots") ?? "";
      assertMatch(await page.textContent('#snapshots tr[data-name="fn-local"]') ?? "", /pinned/);
      assertMatch(await page.textContent('#snapshots tr[data-name="fn-big"]') ?? "", /ago/);
      assertMatch(snapshots, new RegExp(`${(mem.length / CHUNK / 4).toFixed(1)} MiB`));
      // Cache: the bar is drawn and the text gives used of capacity.
      assertMatch(await page.textContent("#cache-text") ?? "", /MiB of 32\.0 MiB \(\d+\.\d%\)/);
      const width = await page.evaluate(() =>
        document.querySelector("#cache-bar .used").style.width as string
      );
      assertMatch(width, /%$/);
      assertEquals(problems, [], "no console errors (a CSP violation would be one)");
      failed = false;
    } finally {
      if (failed) {
        // What the page showed when it went wrong, next to the mid-pull screenshot.
        await page?.screenshot({ path: `${artifacts}/failure.png`, fullPage: true })
          .catch(() => {});
      }
      await browser.close();
      if (failed || wanted) {
        console.error(`status page screenshots: ${artifacts}`);
      } else {
        await Deno.remove(artifacts, { recursive: true }).catch(() => {});
      }
    }
  },
});
