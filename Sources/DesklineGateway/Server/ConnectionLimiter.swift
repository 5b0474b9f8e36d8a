import Synchronization

/// Connection limits: in total, at once per source address, and new connections per address per
/// minute. Checked when a connection is accepted, before anything else is done for it.
final class ConnectionLimiter: Sendable {
    enum Refusal: Equatable {
        case serverFull
        case tooManyFromAddress
        case tooFast
    }

    private struct State {
        var total = 0
        var perAddress: [String: Int] = [:]
        var recent: [String: [ContinuousClock.Instant]] = [:]
    }

    private let state = Mutex(State())
    let maxTotal: Int
    let maxPerAddress: Int
    let maxNewPerAddressPerMinute: Int

    init(maxTotal: Int, maxPerAddress: Int, maxNewPerAddressPerMinute: Int) {
        self.maxTotal = maxTotal
        self.maxPerAddress = maxPerAddress
        self.maxNewPerAddressPerMinute = maxNewPerAddressPerMinute
    }

    /// Admits a connection from `address` (counted until ``release(_:)``), or says why not.
    func admit(_ address: String, now: ContinuousClock.Instant) -> Refusal? {
        state.withLock { s in
            var recent = s.recent[address, default: []]
            recent.removeAll { now - $0 >= .seconds(60) }
            defer { s.recent[address] = recent.isEmpty ? nil : recent }
            guard recent.count < maxNewPerAddressPerMinute else { return .tooFast }
            recent.append(now)
            guard s.total < maxTotal else { return .serverFull }
            guard s.perAddress[address, default: 0] < maxPerAddress else { return .tooManyFromAddress }
            s.total += 1
            s.perAddress[address, default: 0] += 1
            return nil
        }
    }

    func release(_ address: String) {
        state.withLock { s in
            s.total -= 1
            let left = s.perAddress[address, default: 1] - 1
            s.perAddress[address] = left > 0 ? left : nil
        }
    }
}
