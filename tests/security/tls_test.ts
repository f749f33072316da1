import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import { tempDir } from "../helpers/temp.ts";
import { issueCert, makeCa } from "../helpers/tls.ts";
import { createLogger } from "../../src/log/mod.ts";
import { readTlsFiles, type TlsFiles, TlsMaterial } from "../../src/security/tls.ts";

Deno.test("TlsMaterial reloads a whole rotation, and ignores one caught halfway", async () => {
  await using tmp = await tempDir();
  const ca = await makeCa(tmp.path);
  const first = await issueCert(ca, tmp.path, "v1");
  const second = await issueCert(ca, tmp.path, "v2");
  const files: Record<string, string> = {
    "/cert": first.certPem,
    "/key": first.keyPem,
    "/ca": ca.pem,
  };
  const lines: string[] = [];
  const material = await TlsMaterial.load({ cert: "/cert", key: "/key", ca: "/ca" }, {
    log: createLogger({ write: (line) => lines.push(line) }),
    readFile: (path) => Promise.resolve(files[path]!),
  });
  assertEquals(material.current.serialNumber, first.serial);
  const seen: TlsFiles[] = [];
  material.onChange((f) => seen.push(f));
  assertEquals(await material.check(), false, "nothing changed");

  // The certificate is new, its key not yet: keep the old pair, say so once.
  files["/cert"] = second.certPem;
  assertEquals(await material.check(), false);
  assertEquals(await material.check(), false);
  assertEquals(material.current.serialNumber, first.serial);
  assertEquals(lines.filter((l) => l.includes("cannot be used (yet)")).length, 1);

  files["/key"] = second.keyPem;
  assertEquals(await material.check(), true);
  assertEquals(material.current.serialNumber, second.serial);
  assertEquals(seen.map((f) => f.serialNumber), [second.serial]);
  assert(lines.some((l) => l.includes("TLS files reloaded")));
});

Deno.test("readTlsFiles() names the file at fault", async () => {
  await using tmp = await tempDir();
  const ca = await makeCa(tmp.path);
  const a = await issueCert(ca, tmp.path, "a");
  const b = await issueCert(ca, tmp.path, "b");
  const read = (files: Record<string, string>) => (path: string) =>
    path in files ? Promise.resolve(files[path]!) : Promise.reject(new Error(`no ${path}`));
  const paths = { cert: "/c", key: "/k", ca: "/ca" };
  await assertRejects(
    () => readTlsFiles(paths, read({ "/c": "junk", "/k": a.keyPem, "/ca": ca.pem })),
    (e) => /\/c is not a PEM certificate/.test(String(e)),
  );
  await assertRejects(
    () => readTlsFiles(paths, read({ "/c": a.certPem, "/k": b.keyPem, "/ca": ca.pem })),
    (e) => /\/k is not the private key of \/c/.test(String(e)),
  );
  await assertRejects(
    () => readTlsFiles(paths, read({ "/c": a.certPem, "/k": a.keyPem, "/ca": "junk" })),
    (e) => /\/ca is not a PEM certificate/.test(String(e)),
  );
  const ok = await readTlsFiles(paths, read({ "/c": a.certPem, "/k": a.keyPem, "/ca": ca.pem }));
  assertEquals(ok.serialNumber, a.serial);
});
