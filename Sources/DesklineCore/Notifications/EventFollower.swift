import Logging

/// Follows a store's committed events (``Store/committedEvents()``) and hands each tenant's on
/// exactly once and in `seq` order: a batch that arrives after a gap (events the feed missed, as
/// a database's notifications can while it reconnects) waits until the gap was read from the
/// tenant's event log (``Store/events(in:after:limit:)``), and events already handed on are
/// dropped. Pure: ``run(_:catchingUpFrom:from:logger:deliver:)`` does the reading.
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

    /// Follows `feed` (from `store`'s ``Store/committedEvents()``) until it ends, calling
    /// `deliver` with each batch (one tenant's events, in order), reading what it missed from
    /// `store`. A gap that cannot be read after a few tries is logged and skipped.
    public static func run(_ feed: AsyncStream<[TicketEvent]>, catchingUpFrom store: any Store, from start: [TenantID: Int] = [:],
                           logger: Logger, deliver: ([TicketEvent]) -> Void) async {
        var follower = EventFollower(from: start)
        for await batch in feed {
            var failures = 0
            while true {
                switch follower.receive(batch) {
                case .deliver(let events):
                    if !events.isEmpty { deliver(events) }
                case .catchUp(let tenant, let after, let through):
                    do {
                        let missed = try await store.events(in: tenant, after: after, limit: min(through - after, catchUpPage))
                        guard !missed.isEmpty else { throw DesklineError.storage("the event log ends before event \(through)") }
                        if case .deliver(let events) = follower.receive(missed), !events.isEmpty { deliver(events) }
                    } catch {
                        failures += 1
                        guard failures < 3 else {
                            logger.error("could not read missed events; they are not pushed",
                                         metadata: ["tenant": "\(tenant)", "after": "\(after)", "through": "\(through)", "error": "\(error)"])
                            follower.skip(tenant, through: through)
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
