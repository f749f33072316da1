/**
 * The simulated network: what a chunk costs to move between two nodes, or
 * from the origin to a node, in virtual milliseconds.
 *
 * Every shared resource — a node's NIC (each direction), its CPU, its
 * rack's uplink and downlink, the link between two zones, the origin's
 * front end and its aggregate bandwidth — is a **FIFO server**: it works
 * at its full rate whenever something waits for it, one transfer after the
 * other. A transfer reserves its bytes on every resource of its path at
 * once; each resource fits them after what it already accepted, and the
 * transfer ends when the last of them is done, plus the propagation delay
 * (cut-through: the resources work in parallel, the slowest sets the pace).
 * Across many transfers this gives each resource its full throughput and
 * queues behind a busy one; within one resource it serves transfers in
 * order instead of sharing the rate between them, which changes who
 * finishes first, not how much gets through. A cancelled transfer gives
 * its time back where nothing was queued behind it.
 *
 * @module
 */

/** One direction of a link, or a CPU: a FIFO server with a rate. */
export class Resource {
  readonly name: string;
  /** Work per millisecond: bytes for links, chunk-costs for a CPU. */
  readonly perMs: number;
  /** When the resource is next free (virtual ms). */
  #free = 0;
  /** Work accepted in total (bytes for links). */
  served = 0;

  constructor(name: string, perMs: number) {
    if (!(perMs > 0)) throw new RangeError(`resource ${name}: rate ${perMs} must be positive`);
    this.name = name;
    this.perMs = perMs;
  }

  /** Accepts `work` at `at` or after what is queued; returns when it is done. */
  reserve(at: number, work: number): Slot {
    const start = Math.max(at, this.#free);
    const end = start + work / this.perMs;
    this.#free = end;
    this.served += work;
    return { resource: this, start, end, work };
  }

  /** Gives back a reservation cancelled at `now`, where nothing queued after it. */
  cancel(slot: Slot, now: number): void {
    if (this.#free !== slot.end) return;
    const from = Math.max(now, slot.start);
    const unused = (slot.end - from) * this.perMs;
    this.#free = from;
    this.served -= Math.max(0, unused);
  }

  /** How long work arriving at `at` waits before it starts. */
  backlog(at: number): number {
    return Math.max(0, this.#free - at);
  }
}

/** A reservation on one resource. */
export interface Slot {
  resource: Resource;
  start: number;
  end: number;
  work: number;
}

/** A transfer in the network: when it ends, and how to give its time back. */
export interface Transfer {
  /** Virtual ms at which the last byte arrived. */
  end: number;
  cancel(now: number): void;
}

function reserveAll(at: number, parts: [Resource, number][], tail: number): Transfer {
  const slots = parts.map(([resource, work]) => resource.reserve(at, work));
  const end = Math.max(at, ...slots.map((s) => s.end)) + tail;
  return {
    end,
    cancel(now) {
      for (const slot of slots) slot.resource.cancel(slot, now);
    },
  };
}

/** The shape of the simulated fleet. */
export interface TopologySpec {
  nodes: number;
  zones: number;
  racksPerZone: number;
  /** Hosts a rack is built for (its uplink's size); nodes are spread over the racks in turn. */
  hostsPerRack: number;
  /** Nodes are told their rack (`--rack`), so they prefer rack mates. @default true */
  rackLabels?: boolean;
  /** Each node's NIC, each direction, in bits per second. */
  nicBitsPerSecond: number;
  /** Rack uplink (and downlink) = hosts per rack × NIC ÷ this. */
  rackOversubscription: number;
  /** Between two zones, each direction, in bits per second. */
  crossZoneBitsPerSecond: number;
  /** One-way delays, in ms: within a rack, within a zone, across zones. */
  latencyMs: { rack: number; zone: number; crossZone: number };
  origin: OriginSpec;
  cpu: CpuSpec;
}

/** The object store (S3). */
export interface OriginSpec {
  /** Time to the first byte of a GET, in ms. */
  firstByteMs: number;
  /** One connection's throughput, in bytes per second. */
  connectionBytesPerSecond: number;
  /** GET requests per second the bucket prefix serves (S3: about 5,500). */
  requestsPerSecond: number;
  /** All connections together, in bytes per second. */
  aggregateBytesPerSecond: number;
}

/** A node's processor, as the data path uses it. */
export interface CpuSpec {
  /** CPU time to receive and verify one MiB (sha256, write), in ms. */
  receiveMsPerMiB: number;
  /** CPU time to send one MiB to a peer, in ms. */
  sendMsPerMiB: number;
  /** Cores the work spreads over. */
  cores: number;
  /** One processor shared by every node (a fleet on one machine, as `bench fleet` runs). */
  shared?: boolean;
}

/** Where a node sits, and its own resources. */
export interface Place {
  index: number;
  zone: number;
  rack: number;
  nicUp: Resource;
  nicDown: Resource;
  cpu: Resource;
}

const MIB = 1024 * 1024;

/** The network of one simulated fleet. */
export class Network {
  readonly spec: TopologySpec;
  readonly places: Place[];
  readonly #rackUp: Resource[] = [];
  readonly #rackDown: Resource[] = [];
  /** Zone a → zone b, at index a × zones + b. */
  readonly #zoneLinks: Resource[] = [];
  readonly #originRequests: Resource;
  readonly #originBytes: Resource;
  /** Bytes that crossed zones. */
  crossZoneBytes = 0;
  /** Requests the origin served. */
  originRequests = 0;

  constructor(spec: TopologySpec) {
    this.spec = spec;
    const racks = spec.zones * spec.racksPerZone;
    const nicPerMs = spec.nicBitsPerSecond / 8 / 1000;
    for (let r = 0; r < racks; r++) {
      const uplink = (spec.hostsPerRack * nicPerMs) / spec.rackOversubscription;
      this.#rackUp.push(new Resource(`rack-${r}-up`, uplink));
      this.#rackDown.push(new Resource(`rack-${r}-down`, uplink));
    }
    for (let a = 0; a < spec.zones; a++) {
      for (let b = 0; b < spec.zones; b++) {
        this.#zoneLinks.push(
          new Resource(`zone-${a}-${b}`, spec.crossZoneBitsPerSecond / 8 / 1000),
        );
      }
    }
    this.#originRequests = new Resource("origin-requests", spec.origin.requestsPerSecond / 1000);
    this.#originBytes = new Resource("origin-bytes", spec.origin.aggregateBytesPerSecond / 1000);
    // A chunk-cost unit per MiB: the CPU resource's rate is cores per ms.
    const sharedCpu = spec.cpu.shared ? new Resource("cpu", spec.cpu.cores) : null;
    this.places = Array.from({ length: spec.nodes }, (_, index) => {
      // Racks in turn, alternating zones: any fleet size spans every zone.
      const rack = index % racks;
      return {
        index,
        rack,
        zone: rack % spec.zones,
        nicUp: new Resource(`node-${index}-up`, nicPerMs),
        nicDown: new Resource(`node-${index}-down`, nicPerMs),
        cpu: sharedCpu ?? new Resource(`node-${index}-cpu`, spec.cpu.cores),
      };
    });
  }

  /** One-way delay between two nodes, in ms. */
  latency(a: Place, b: Place): number {
    const { latencyMs } = this.spec;
    if (a.rack === b.rack) return latencyMs.rack;
    return a.zone === b.zone ? latencyMs.zone : latencyMs.crossZone;
  }

  /**
   * A transfer of `bytes` from `from` to `to` starting at `at` (the request
   * has arrived): the sender's CPU and NIC, the racks' links and the zones'
   * link where it crosses them, the receiver's NIC and CPU.
   */
  peerTransfer(from: Place, to: Place, bytes: number, at: number): Transfer {
    const { cpu } = this.spec;
    const parts: [Resource, number][] = [
      [from.cpu, (bytes / MIB) * cpu.sendMsPerMiB],
      [from.nicUp, bytes],
    ];
    if (from.rack !== to.rack) {
      parts.push([this.#rackUp[from.rack]!, bytes], [this.#rackDown[to.rack]!, bytes]);
    }
    if (from.zone !== to.zone) {
      parts.push([this.#zoneLinks[from.zone * this.spec.zones + to.zone]!, bytes]);
      this.crossZoneBytes += bytes;
    }
    parts.push([to.nicDown, bytes], [to.cpu, (bytes / MIB) * cpu.receiveMsPerMiB]);
    return reserveAll(at, parts, this.latency(from, to));
  }

  /**
   * A GET of `bytes` from the origin by `to`, sent at `at`: the request
   * waits for the origin's request rate, then the first byte, then the
   * bytes at one connection's rate, within the origin's aggregate rate and
   * through the receiver's rack downlink, NIC and CPU.
   */
  originTransfer(to: Place, bytes: number, at: number): Transfer {
    const { origin, cpu } = this.spec;
    const admitted = this.#originRequests.reserve(at, 1);
    const first = admitted.end + origin.firstByteMs;
    const connection = new Resource("connection", origin.connectionBytesPerSecond / 1000);
    this.originRequests++;
    const transfer = reserveAll(first, [
      [connection, bytes],
      [this.#originBytes, bytes],
      [this.#rackDown[to.rack]!, bytes],
      [to.nicDown, bytes],
      [to.cpu, (bytes / MIB) * cpu.receiveMsPerMiB],
    ], 0);
    return {
      end: transfer.end,
      cancel: (now) => {
        transfer.cancel(now);
        this.#originRequests.cancel(admitted, now);
      },
    };
  }

  /** Makes a node's NIC `factor` times slower, both ways (a degraded host). */
  slow(place: Place, factor: number): void {
    const perMs = place.nicUp.perMs / factor;
    place.nicUp = new Resource(`node-${place.index}-up`, perMs);
    place.nicDown = new Resource(`node-${place.index}-down`, perMs);
  }

  /** Bytes each node sent to peers. */
  uploaded(place: Place): number {
    return place.nicUp.served;
  }
}
