/// Runs async work one at a time per key (e.g. per ticket), in arrival order, while different
/// keys run concurrently. Used so that a ticket's changes are stored and pushed in the same
/// order: what HISTORY returns is what was pushed.
public actor KeyedSerializer<Key: Hashable & Sendable> {
    private var waiting: [Key: [CheckedContinuation<Void, Never>]] = [:]

    public init() {}

    public func run<T: Sendable, E: Error>(_ key: Key, _ body: @Sendable () async throws(E) -> T) async throws(E) -> T {
        await acquire(key)
        defer { release(key) }
        return try await body()
    }

    private func acquire(_ key: Key) async {
        if waiting[key] == nil {
            waiting[key] = [] // free: take it
            return
        }
        await withCheckedContinuation { waiting[key]!.append($0) }
    }

    private func release(_ key: Key) {
        guard var queue = waiting[key] else { return }
        if queue.isEmpty {
            waiting[key] = nil
        } else {
            let next = queue.removeFirst()
            waiting[key] = queue
            next.resume()
        }
    }
}
