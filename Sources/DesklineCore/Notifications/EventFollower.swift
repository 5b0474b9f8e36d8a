import Logging

/// Follows a store's committed events (``Store/committedEvents()``) and hands each tenant's on
/// exactly once and in `seq` order: a batch that arrives after a gap (events the feed missed, as
/// a database's notifications can while it reconnects) waits until the gap was read from the
/// tenant's event log (``Store/events(in:after:limit:)``), and events already handed on are
/// dropped. Pure: ``run(_:catchingUpFrom:from:logger:deliver:skipped:)`` does the reading.
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

    /// Follows `feed` (from `store`'s ``Store/committedEvents()``) until it ends or the task is
    /// cancelled, calling `deliver` with each batch (one tenant's events, in order), reading what
    /// it missed from `store`'s event log. Events the log does not hold (a hole in it, or a read
    /// that fails three times) are logged and skipped, and `skipped` is told how far.
    public static func run(_ feed: AsyncStream<[TicketEvent]>, catchingUpFrom store: any Store, from start: [TenantID: Int] = [:],
                           logger: Logger, deliver: ([TicketEvent]) -> Void,
                           skipped: (TenantID, _ through: Int) -> Void = { _, _ in }) async {
        await run(feed, readingMissed: { tenant, after, limit throws(DesklineError) in try await store.events(in: tenant, after: after, limit: limit) },
                  from: start, logger: logger, deliver: deliver, skipped: skipped)
    }

    /// ``run(_:catchingUpFrom:from:logger:deliver:skipped:)`` with what reads the log:
    /// `read(tenant, after, limit)`.
    public static func run(_ feed: AsyncStream<[TicketEvent]>,
                           readingMissed read: (TenantID, _ after: Int, _ limit: Int) async throws(DesklineError) -> [TicketEvent],
                           from start: [TenantID: Int] = [:], logger: Logger, deliver: ([TicketEvent]) -> Void,
                           skipped: (TenantID, _ through: Int) -> Void = { _, _ in }) async {
        var follower = EventFollower(from: start)
        for await batch in feed {
            var failures = 0
            while !Task.isCancelled {
                switch follower.receive(batch) {
                case .deliver(let events):
                    if !events.isEmpty { deliver(events) }
                case .catchUp(let tenant, let after, let through):
                    do {
                        let page = try await read(tenant, after, min(through - after, catchUpPage))
                        let missed = page.filter { ($0.seq ?? 0) <= through }
                        guard let first = missed.first?.seq else {
                            guard !page.isEmpty else { throw DesklineError.storage("the event log holds no events \(after + 1)-\(through)") }
                            // The log holds only later ones: the whole range is gone (pruned).
                            logger.error("the event log no longer holds these events; they are not pushed",
                                         metadata: ["tenant": "\(tenant)", "from": "\(after + 1)", "through": "\(through)"])
                            follower.skip(tenant, through: through)
                            skipped(tenant, through)
                            continue
                        }
                        if first > after + 1 {
                            logger.error("the event log has a hole; those events are not pushed",
                                         metadata: ["tenant": "\(tenant)", "from": "\(after + 1)", "through": "\(first - 1)"])
                            follower.skip(tenant, through: first - 1)
                            skipped(tenant, first - 1)
                        }
                        if case .deliver(let events) = follower.receive(missed), !events.isEmpty { deliver(events) }
                        failures = 0
                    } catch {
                        failures += 1
                        guard failures < 3 else {
                            logger.error("could not read missed events; they are not pushed",
                                         metadata: ["tenant": "\(tenant)", "after": "\(after)", "through": "\(through)", "error": "\(error)"])
                            follower.skip(tenant, through: through)
                            skipped(tenant, through)
                            continue
                        }
                        try? await Task.sleep(for: .milliseconds(100 * failures))
                    }
                    continue
                }
                break
            }
        }
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
