/**
 * The origin behind an interface: an object store (MinIO, any S3) holding
 * snapshots as `<prefix>/<name>/manifest.json` and `<prefix>/<name>/files/<file>`.
 * {@linkcode S3Origin} is the real one; {@linkcode MemoryOrigin} is the
 * in-memory fake with fault switches that tests and the in-process cluster use.
 *
 * @module
 */

/** An object listed under a prefix. */
export interface ObjectInfo {
  key: string;
  size: number;
  lastModified: number;
}

/** Counters for metrics and status. */
export interface OriginStats {
  requests: number;
  retries: number;
  errors: number;
  bytesRead: number;
  bytesWritten: number;
}

/** Health as shown by `/v1/status`. */
export interface OriginHealth {
  endpoint: string;
  bucket: string;
  prefix: string;
  healthy: boolean;
  lastContactMs: number | null;
  lastError: string | null;
}

/** Hooks for metrics. */
export interface OriginObserver {
  request?(): void;
  retry?(what: string, err: unknown): void;
  error?(what: string, err: unknown): void;
}

/** How {@linkcode Origin.uploadFile} reads what it uploads. */
export interface UploadOptions {
  /** Opens the bytes to upload (again, when a part must be retried from the start). */
  open: () => ReadableStream<Uint8Array>;
  size: number;
  /** Bytes read so far. */
  onProgress?: (bytes: number) => void;
  signal?: AbortSignal;
}

/** An object store holding snapshots. */
export interface Origin {
  readonly endpoint: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly stats: OriginStats;
  observer: OriginObserver;
  /** `<prefix>/<name>/` */
  snapshotPrefix(name: string): string;
  /** `<prefix>/<name>/manifest.json` */
  manifestKey(name: string): string;
  /** `<prefix>/<name>/files/<file>` */
  fileKey(name: string, file: string): string;
  health(): OriginHealth;
  /** Checks the bucket now; false when the origin cannot be reached. */
  probe(): Promise<boolean>;
  /** An object's bytes (or a range of them, inclusive), or null when it does not exist. */
  getObject(
    key: string,
    options?: { range?: [number, number]; signal?: AbortSignal },
  ): Promise<Uint8Array | null>;
  /** Every object under `prefix`. */
  list(prefix: string): Promise<ObjectInfo[]>;
  putBytes(
    key: string,
    bytes: Uint8Array,
    options?: { contentType?: string; signal?: AbortSignal },
  ): Promise<void>;
  uploadFile(key: string, options: UploadOptions): Promise<void>;
  deleteObject(key: string): Promise<void>;
  deleteObjects(keys: string[]): Promise<void>;
}

/** `<prefix>/<name>/`, for a prefix without leading or trailing slashes. */
export function snapshotPrefix(prefix: string, name: string): string {
  return prefix ? `${prefix}/${name}/` : `${name}/`;
}
