/**
 * Throwaway certificate authorities and node certificates for tests, made
 * with openssl (installed by .ci/run when missing): P-256 keys, a CA per
 * call, leaf certificates for 127.0.0.1 and localhost usable as server and
 * client certificates.
 *
 * @module
 */

/** A certificate authority on disk. */
export interface TestCa {
  name: string;
  cert: string;
  key: string;
  /** The CA certificate's PEM text. */
  pem: string;
}

/** A node certificate and key on disk. */
export interface TestCert {
  cert: string;
  key: string;
  certPem: string;
  keyPem: string;
  /** Serial number, uppercase hex (as node:crypto reports it). */
  serial: string;
}

async function openssl(args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`openssl ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Creates a CA in `dir` (files `<name>-ca.pem`, `<name>-ca.key`). */
export async function makeCa(dir: string, name = "test"): Promise<TestCa> {
  const cert = `${dir}/${name}-ca.pem`;
  const key = `${dir}/${name}-ca.key`;
  await openssl([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    "2",
    "-subj",
    `/CN=${name} snapmesh test CA`,
  ], dir);
  return { name, cert, key, pem: await Deno.readTextFile(cert) };
}

/**
 * Issues a certificate from `ca` for 127.0.0.1 and localhost (server and
 * client use) into `dir` as `<name>.pem` and `<name>.key`.
 */
export async function issueCert(ca: TestCa, dir: string, name: string): Promise<TestCert> {
  const cert = `${dir}/${name}.pem`;
  const key = `${dir}/${name}.key`;
  const csr = `${dir}/${name}.csr`;
  const ext = `${dir}/${name}.ext`;
  await openssl([
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    key,
    "-out",
    csr,
    "-subj",
    `/CN=${name}`,
  ], dir);
  await Deno.writeTextFile(
    ext,
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
  );
  await openssl([
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    ca.cert,
    "-CAkey",
    ca.key,
    "-CAcreateserial",
    "-out",
    cert,
    "-days",
    "2",
    "-extfile",
    ext,
  ], dir);
  await Deno.chmod(key, 0o600);
  const serial = (await openssl(["x509", "-in", cert, "-noout", "-serial"], dir))
    .trim().replace(/^serial=/, "").toUpperCase()
    // As node:tls prints it: without leading zero digits.
    .replace(/^0+(?=.)/, "");
  return {
    cert,
    key,
    certPem: await Deno.readTextFile(cert),
    keyPem: await Deno.readTextFile(key),
    serial,
  };
}
