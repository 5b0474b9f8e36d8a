import Logging
import Synchronization

/// Follows a store's committed events (``Store/followCommittedEvents(_:)``) and hands each tenant's on
/// exactly once and in `seq` order: a batch that arrives after a gap (events the feed missed, as
/// a database's notifications can while it reconnects) waits until the gap was read from the
/// tenant's event log (``Store/events(in:after:limit:)``), and events already handed on are
/// dropped. Pure: ``LiveEventFollower`` does the reading.
public struct EventFollower: Sendable {
    /// The last `seq` handed on, per tenant. A tenant not in here is followed from its first
    /// event that arrives (a follower starts "from now").
    public private(set) var delivered: [TenantID: Int]

    public init(from delivered: [TenantID: Int] = [:]) {
        self.delivered = delivered
    }

    /// What to do with a batch.
    public enum Step: Equatable, Sendable {
        /// Hand these on (possibly none: all were handed on before).
        case deliver([TicketEvent])
        /// First read the tenant's events above `after` up to and including `through`, give them
        /// to ``receive(_:)``, then the batch again.
        case catchUp(TenantID, after: Int, through: Int)
    }

    /// Takes one batch of one tenant's consecutive events.
    public mutating func receive(_ batch: [TicketEvent]) -> Step {
        guard let tenant = batch.first?.tenantId else { return .deliver([]) }
        let last = delivered[tenant]
        let fresh = batch.filter { event in
            guard let seq = event.seq, let last else { return true }
            return seq > last
        }
        guard let first = fresh.first?.seq else { return .deliver(fresh) }
        if let last, first > last + 1 { return .catchUp(tenant, after: last, through: first - 1) }
        if let newest = fresh.last?.seq { delivered[tenant] = newest }
        return .deliver(fresh)
    }

    /// Gives up on a gap that cannot be read: delivery goes on after it.
    public mutating func skip(_ tenant: TenantID, through seq: Int) {
        delivered[tenant] = max(delivered[tenant] ?? 0, seq)
    }

    /// Most events read in one catch-up read.
    public static let catchUpPage = 500
}

/// Follows a store's committed events as the store hands them over
/// (``Store/followCommittedEvents(_:)``), with an ``EventFollower``: a batch that can be handed on
/// is handed on at once, on the thread that brought it (a file store's writer, right after its
/// commit and before the writes' callers are answered), with no task or thread in between. A
/// batch after a gap waits, with the tenant's later batches, until a task read the gap from the
/// tenant's event log. Events the log does not hold (a hole in it, or a read that fails three
/// times) are logged and skipped, and `skipped` is told how far.
public final class LiveEventFollower: Sendable {
    public typealias ReadMissed = @Sendable (TenantID, _ after: Int, _ limit: Int) async throws(DesklineError) -> [TicketEvent]

    private struct State {
        var follower: EventFollower
        /// Per tenant catching up: the batches that wait for the read, the first one first.
        var waiting: [TenantID: [[TicketEvent]]] = [:]
        /// The reads running (what ``settled()`` waits for).
        var reads: [TenantID: Task<Void, Never>] = [:]
        var stopped = false
    }

    private let state: Mutex<State>
    private let read: ReadMissed
    private let logger: Logger
    private let deliver: @Sendable ([TicketEvent]) -> Void
    private let skipped: @Sendable (TenantID, _ through: Int) -> Void

    /// `deliver` gets each batch to hand on (one tenant's events, in order) and `skipped` how far
    /// a tenant's events were given up; both are called one at a time, under the follower's lock,
    /// so they must not block.
    public init(readingMissed read: @escaping ReadMissed, from start: [TenantID: Int] = [:], logger: Logger,
                deliver: @escaping @Sendable ([TicketEvent]) -> Void,
                skipped: @escaping @Sendable (TenantID, _ through: Int) -> Void = { _, _ in }) {
        self.state = Mutex(State(follower: EventFollower(from: start)))
        self.read = read
        self.logger = logger
        self.deliver = deliver
        self.skipped = skipped
    }

    /// A follower that reads what it missed from `store`'s event log.
    public convenience init(catchingUpFrom store: any Store, from start: [TenantID: Int] = [:], logger: Logger,
                            deliver: @escaping @Sendable ([TicketEvent]) -> Void,
                            skipped: @escaping @Sendable (TenantID, _ through: Int) -> Void = { _, _ in }) {
        self.init(readingMissed: { tenant, after, limit throws(DesklineError) in try await store.events(in: tenant, after: after, limit: limit) },
                  from: start, logger: logger, deliver: deliver, skipped: skipped)
    }

    /// Takes one batch (one tenant's consecutive events, in order): the store's sink.
    public func receive(_ batch: [TicketEvent]) {
        guard let tenant = batch.first?.tenantId else { return }
        state.withLock { state in
            guard !state.stopped else { return }
            if state.waiting[tenant] != nil {
                state.waiting[tenant]!.append(batch)
            } else {
                state.waiting[tenant] = [batch]
                drain(tenant, &state)
            }
        }
    }

    /// Nothing more is handed on; a read under way is cancelled.
    public func stop() {
        let reads = state.withLock { state in
            state.stopped = true
            state.waiting = [:]
            return state.reads.values
        }
        for read in reads { read.cancel() }
    }

    /// Returns once no read of missed events runs (for tests).
    public func settled() async {
        while let read = state.withLock({ $0.reads.values.first }) { await read.value }
    }

    /// Hands on the tenant's waiting batches in order, until one needs a read first (which it
    /// starts) or none is left.
    private func drain(_ tenant: TenantID, _ state: inout State) {
        while let batch = state.waiting[tenant]?.first {
            switch state.follower.receive(batch) {
            case .deliver(let events):
                if !events.isEmpty { deliver(events) }
                state.waiting[tenant]!.removeFirst()
            case .catchUp(_, let after, let through):
                state.reads[tenant] = Task { await self.readMissed(tenant, after: after, through: through) }
                return
            }
        }
        state.waiting[tenant] = nil
    }

    /// Reads the missed events above `after` up to `through` (a page at most), hands them on,
    /// and goes on with the tenant's waiting batches.
    private func readMissed(_ tenant: TenantID, after: Int, through: Int) async {
        var failures = 0
        while !Task.isCancelled {
            do {
                let page = try await read(tenant, after, min(through - after, EventFollower.catchUpPage))
                guard !page.isEmpty else { throw DesklineError.storage("the event log holds no events \(after + 1)-\(through)") }
                state.withLock { state in
                    state.reads[tenant] = nil
                    guard !state.stopped else { return }
                    take(page, of: tenant, after: after, through: through, &state)
                    drain(tenant, &state)
                }
                return
            } catch {
                failures += 1
                guard failures < 3 else {
                    logger.error("could not read missed events; they are not pushed",
                                 metadata: ["tenant": "\(tenant)", "after": "\(after)", "through": "\(through)", "error": "\(error)"])
                    state.withLock { state in
                        state.reads[tenant] = nil
                        guard !state.stopped else { return }
                        state.follower.skip(tenant, through: through)
                        skipped(tenant, through)
                        drain(tenant, &state)
                    }
                    return
                }
                try? await Task.sleep(for: .milliseconds(100 * failures))
            }
        }
        state.withLock { _ = $0.reads.removeValue(forKey: tenant) }
    }

    /// Hands on what a read of the missed events above `after` found (not empty), skipping what
    /// the log no longer holds.
    private func take(_ page: [TicketEvent], of tenant: TenantID, after: Int, through: Int, _ state: inout State) {
        let missed = page.filter { ($0.seq ?? 0) <= through }
        guard let first = missed.first?.seq else {
            // The log holds only later ones: the whole range is gone (pruned).
            logger.error("the event log no longer holds these events; they are not pushed",
                         metadata: ["tenant": "\(tenant)", "from": "\(after + 1)", "through": "\(through)"])
            state.follower.skip(tenant, through: through)
            skipped(tenant, through)
            return
        }
        if first > after + 1 {
            logger.error("the event log has a hole; those events are not pushed",
                         metadata: ["tenant": "\(tenant)", "from": "\(after + 1)", "through": "\(first - 1)"])
            state.follower.skip(tenant, through: first - 1)
            skipped(tenant, first - 1)
        }
        if case .deliver(let events) = state.follower.receive(missed), !events.isEmpty { deliver(events) }
    }
}

/// Where a process delivers committed events (the gateway's session hub). A service's answer to a
/// change waits until that change's event was delivered here, so it never overtakes the pushes
/// of changes committed before it: a client that gets `OK` for message 5 already has message 4
/// pushed before it, as the tenant's event log orders them (on any node).
public protocol EventDelivery: Sendable {
    /// Returns once every event of `tenant` up to `seq` was delivered (or will never be: the
    /// delivery stopped).
    func waitUntilDelivered(_ tenant: TenantID, through seq: Int) async
}
