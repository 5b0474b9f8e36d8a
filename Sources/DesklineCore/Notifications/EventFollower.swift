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
///
/// One thread at a time hands on a tenant's events (the one that brought a batch while none was
/// being handed on, or the read's task), outside the follower's lock: tenants do not wait for
/// each other's deliveries, and a tenant's batches that arrive meanwhile are handed on by that
/// thread, in order.
public final class LiveEventFollower: Sendable {
    public typealias ReadMissed = @Sendable (TenantID, _ after: Int, _ limit: Int) async throws(DesklineError) -> [TicketEvent]

    private struct State {
        var follower: EventFollower
        /// Per tenant: the batches not handed on yet, the first one first.
        var waiting: [TenantID: [[TicketEvent]]] = [:]
        /// Tenants whose events a thread is handing on now.
        var handing: Set<TenantID> = []
        /// Tenants whose missed events are being read: their batches wait.
        var reading: Set<TenantID> = []
        /// The tasks that read missed events and hand on what waited meanwhile, until they end
        /// (what ``settled()`` waits for).
        var tasks: [Int: Task<Void, Never>] = [:]
        var nextTask = 0
        var stopped = false
    }

    /// What a thread does for a tenant outside the lock, in order.
    private enum Step {
        case deliver([TicketEvent])
        case skipped(through: Int)
    }

    private let state: Mutex<State>
    private let read: ReadMissed
    private let logger: Logger
    private let deliver: @Sendable ([TicketEvent]) -> Void
    private let skipped: @Sendable (TenantID, _ through: Int) -> Void

    /// `deliver` gets each batch to hand on (one tenant's events, in order) and `skipped` how far
    /// a tenant's events were given up; for each tenant they are called one at a time, in order,
    /// and they must not block.
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

    /// Takes one batch (one tenant's consecutive events, in order): the store's sink. Hands it
    /// on before returning, unless another thread is handing on the tenant's events (then that
    /// one hands it on) or a read of missed events runs for the tenant (then it waits for that).
    public func receive(_ batch: [TicketEvent]) {
        guard let tenant = batch.first?.tenantId else { return }
        let mine = state.withLock { state -> Bool in
            guard !state.stopped else { return false }
            state.waiting[tenant, default: []].append(batch)
            guard !state.handing.contains(tenant), !state.reading.contains(tenant) else { return false }
            state.handing.insert(tenant)
            return true
        }
        if mine { handOn(tenant) }
    }

    /// Nothing more is handed on (apart from a batch being handed on at that moment); a read
    /// under way is cancelled.
    public func stop() {
        let tasks = state.withLock { state in
            state.stopped = true
            state.waiting = [:]
            return state.tasks.values
        }
        for task in tasks { task.cancel() }
    }

    /// Returns once no read of missed events runs, and what waited for one was handed on (for
    /// tests).
    public func settled() async {
        while let task = state.withLock({ $0.tasks.values.first }) { await task.value }
    }

    /// By the thread that hands on the tenant's events: hands on its waiting batches in order,
    /// until one needs a read first (which it starts) or none is left.
    private func handOn(_ tenant: TenantID) {
        while let events = state.withLock({ state in next(of: tenant, &state) }) {
            if !events.isEmpty { deliver(events) }
        }
    }

    /// Under the lock: the tenant's next events to hand on, or nil when the thread is done.
    private func next(of tenant: TenantID, _ state: inout State) -> [TicketEvent]? {
        guard !state.stopped, let batch = state.waiting[tenant]?.first else {
            state.waiting[tenant] = nil
            state.handing.remove(tenant)
            return nil
        }
        switch state.follower.receive(batch) {
        case .deliver(let events):
            state.waiting[tenant]!.removeFirst()
            return events
        case .catchUp(_, let after, let through):
            state.handing.remove(tenant)
            state.reading.insert(tenant)
            let id = state.nextTask
            state.nextTask += 1
            state.tasks[id] = Task {
                await self.readMissed(tenant, after: after, through: through)
                _ = self.state.withLock { $0.tasks.removeValue(forKey: id) }
            }
            return nil
        }
    }

    /// Reads the missed events above `after` up to `through` (a page at most), hands them on,
    /// and goes on with the tenant's waiting batches.
    private func readMissed(_ tenant: TenantID, after: Int, through: Int) async {
        var failures = 0
        while !Task.isCancelled {
            let steps: [Step]?
            do {
                let page = try await read(tenant, after, min(through - after, EventFollower.catchUpPage))
                guard !page.isEmpty else { throw DesklineError.storage("the event log holds no events \(after + 1)-\(through)") }
                steps = takeOver(tenant) { state in take(page, of: tenant, after: after, through: through, &state) }
            } catch {
                failures += 1
                guard failures >= 3 else {
                    try? await Task.sleep(for: .milliseconds(100 * failures))
                    continue
                }
                logger.error("could not read missed events; they are not pushed",
                             metadata: ["tenant": "\(tenant)", "after": "\(after)", "through": "\(through)", "error": "\(error)"])
                steps = takeOver(tenant) { state in
                    state.follower.skip(tenant, through: through)
                    return [.skipped(through: through)]
                }
            }
            guard let steps else { return }
            for step in steps {
                switch step {
                case .deliver(let events): if !events.isEmpty { deliver(events) }
                case .skipped(let through): skipped(tenant, through)
                }
            }
            return handOn(tenant)
        }
        _ = state.withLock { $0.reading.remove(tenant) }
    }

    /// Under the lock: the read's task ends its read and becomes the thread that hands on the
    /// tenant's events (nil: stopped).
    private func takeOver(_ tenant: TenantID, _ body: (inout State) -> [Step]) -> [Step]? {
        state.withLock { state in
            state.reading.remove(tenant)
            guard !state.stopped else { return nil }
            state.handing.insert(tenant)
            return body(&state)
        }
    }

    /// What a read of the missed events above `after` found (not empty) gives to hand on, with
    /// what the log no longer holds skipped.
    private func take(_ page: [TicketEvent], of tenant: TenantID, after: Int, through: Int, _ state: inout State) -> [Step] {
        let missed = page.filter { ($0.seq ?? 0) <= through }
        guard let first = missed.first?.seq else {
            // The log holds only later ones: the whole range is gone (pruned).
            logger.error("the event log no longer holds these events; they are not pushed",
                         metadata: ["tenant": "\(tenant)", "from": "\(after + 1)", "through": "\(through)"])
            state.follower.skip(tenant, through: through)
            return [.skipped(through: through)]
        }
        var steps: [Step] = []
        if first > after + 1 {
            logger.error("the event log has a hole; those events are not pushed",
                         metadata: ["tenant": "\(tenant)", "from": "\(after + 1)", "through": "\(first - 1)"])
            state.follower.skip(tenant, through: first - 1)
            steps.append(.skipped(through: first - 1))
        }
        if case .deliver(let events) = state.follower.receive(missed) { steps.append(.deliver(events)) }
        return steps
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
