import Synchronization

/// Hands committed events to every subscriber of a store's ``Store/committedEvents()``: each
/// subscriber gets its own `AsyncStream`, and every batch published after it subscribed.
public final class EventBroadcast: Sendable {
    private let subscribers = Mutex<[Int: AsyncStream<[TicketEvent]>.Continuation]>([:])
    private let nextId = Atomic<Int>(0)

    public init() {}

    public func subscribe() -> AsyncStream<[TicketEvent]> {
        let (stream, continuation) = AsyncStream<[TicketEvent]>.makeStream()
        let id = nextId.add(1, ordering: .relaxed).newValue
        subscribers.withLock { $0[id] = continuation }
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.removeValue(forKey: id) }
        }
        return stream
    }

    /// Hands one batch (one tenant's consecutive events) to every subscriber. The caller
    /// publishes one batch at a time, in commit order.
    public func publish(_ events: [TicketEvent]) {
        guard !events.isEmpty else { return }
        let targets = subscribers.withLock { Array($0.values) }
        for continuation in targets { continuation.yield(events) }
    }
}
