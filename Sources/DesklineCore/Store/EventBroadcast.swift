import Synchronization

/// Hands committed events to every follower of a store (``Store/followCommittedEvents(_:)``):
/// each batch a store publishes goes to every sink attached before it, on the publishing thread,
/// before ``publish(_:)`` returns.
public final class EventBroadcast: Sendable {
    private let sinks = Mutex<[Int: CommittedEventSink]>([:])
    private let nextId = Atomic<Int>(0)

    public init() {}

    /// Calls `sink` with every batch published from now on, until the subscription is cancelled.
    public func follow(_ sink: @escaping CommittedEventSink) -> EventSubscription {
        let id = nextId.add(1, ordering: .relaxed).newValue
        sinks.withLock { $0[id] = sink }
        return EventSubscription { [weak self] in _ = self?.sinks.withLock { $0.removeValue(forKey: id) } }
    }

    /// Hands one batch (one tenant's consecutive events) to every sink. The caller publishes
    /// each tenant's batches one at a time, in commit order.
    public func publish(_ events: [TicketEvent]) {
        guard !events.isEmpty else { return }
        let targets = sinks.withLock { Array($0.values) }
        for sink in targets { sink(events) }
    }
}

/// What a store calls with each batch of committed events: one tenant's consecutive events, in
/// `seq` order, on the thread that committed or received them. It must return quickly and must
/// not wait for the store (it may run under the store's locks).
public typealias CommittedEventSink = @Sendable ([TicketEvent]) -> Void

/// A follower's hold on a store's committed events (``Store/followCommittedEvents(_:)``): no
/// batch reaches its sink once ``cancel()`` returned, apart from those being handed over at that
/// moment.
public final class EventSubscription: Sendable {
    private let onCancel: Mutex<(@Sendable () -> Void)?>

    public init(onCancel: @escaping @Sendable () -> Void) {
        self.onCancel = Mutex(onCancel)
    }

    public func cancel() {
        onCancel.withLock { cancel in
            defer { cancel = nil }
            return cancel
        }?()
    }
}
