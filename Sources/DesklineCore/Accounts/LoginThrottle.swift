import Synchronization

/// Failed-login limits, per source address and per account (the login as typed, normalised):
/// after `limit` failures within `window`, further attempts are refused until the oldest failure
/// leaves the window. Refusals look the same whether the account exists or not, and cost no
/// password derivation. A successful login clears the account's failures.
///
/// A pure value: the caller supplies the time and keeps it behind a lock.
public struct LoginThrottle: Sendable {
    public struct Rule: Sendable, Equatable {
        public var limit: Int
        public var window: Duration
        public init(limit: Int, window: Duration) {
            self.limit = limit
            self.window = window
        }
    }

    public let perAddress: Rule
    public let perAccount: Rule
    private var addressFailures: [String: [ContinuousClock.Instant]] = [:]
    private var accountFailures: [String: [ContinuousClock.Instant]] = [:]

    public init(perAddress: Rule, perAccount: Rule) {
        self.perAddress = perAddress
        self.perAccount = perAccount
    }

    /// The key for an account: the email LOGIN's first parameter names, normalised as a login
    /// is (so `acme/ann@x.test`, `ANN@x.test` and `ann@x.test` with trailing blanks, which reach
    /// the same account, count together; the tenant prefix is left out for the same reason).
    /// Something that is no email at all counts as it was typed, case-insensitively.
    public static func accountKey(_ login: String) -> String {
        let email = login.firstIndex(of: "/").map { String(login[login.index(after: $0)...]) } ?? login
        return (try? InputRules.email(email)) ?? login.lowercased()
    }

    /// Nil if an attempt may go ahead; otherwise how long until one may.
    public mutating func retryAfter(address: String, account: String, now: ContinuousClock.Instant) -> Duration? {
        let a = Self.wait(&addressFailures, address, perAddress, now)
        let b = Self.wait(&accountFailures, account, perAccount, now)
        switch (a, b) {
        case (nil, nil): return nil
        case (let x?, nil), (nil, let x?): return x
        case (let x?, let y?): return max(x, y)
        }
    }

    public mutating func recordFailure(address: String, account: String, now: ContinuousClock.Instant) {
        addressFailures[address, default: []].append(now)
        accountFailures[account, default: []].append(now)
    }

    public mutating func recordSuccess(account: String) {
        accountFailures[account] = nil
    }

    private static func wait(_ table: inout [String: [ContinuousClock.Instant]], _ key: String, _ rule: Rule,
                             _ now: ContinuousClock.Instant) -> Duration? {
        guard var times = table[key] else { return nil }
        times.removeAll { now - $0 >= rule.window }
        table[key] = times.isEmpty ? nil : times
        guard times.count >= rule.limit, let oldest = times.first else { return nil }
        return rule.window - (now - oldest)
    }
}

/// Where failed logins are counted (docs/PROTOCOL.md, "Limits"): the ``LoginThrottle`` rules over
/// every node that serves one store, so an attacker gains nothing by spreading attempts over
/// nodes. One node counts in memory (``LocalLoginLimiter``); nodes that share a store count in it
/// (PostgreSQL: a `login_failures` table, timed by the database's clock).
public protocol LoginLimiter: Sendable {
    /// Nil if an attempt may go ahead; otherwise how long until one may.
    func retryAfter(address: String, account: String) async throws(DesklineError) -> Duration?
    func failed(address: String, account: String) async
    /// Clears the account's failures.
    func succeeded(account: String) async
}

/// A ``LoginThrottle`` behind a lock: the limits of one node.
public final class LocalLoginLimiter: LoginLimiter {
    private let throttle: Mutex<LoginThrottle>

    public init(_ throttle: LoginThrottle) { self.throttle = Mutex(throttle) }

    public func retryAfter(address: String, account: String) async throws(DesklineError) -> Duration? {
        throttle.withLock { $0.retryAfter(address: address, account: account, now: .now) }
    }

    public func failed(address: String, account: String) async {
        throttle.withLock { $0.recordFailure(address: address, account: account, now: .now) }
    }

    public func succeeded(account: String) async {
        throttle.withLock { $0.recordSuccess(account: account) }
    }
}

/// What the gateway nodes of one store share beyond its data. A store that only one node uses
/// has none (the gateway keeps presence and login failures in memory).
public protocol SharedNodeState: Sendable {
    /// Presence across the nodes; the same object for the store's life.
    var presence: any PresenceDirectory { get }
    /// Failed logins counted across the nodes under these rules.
    func loginLimiter(perAddress: LoginThrottle.Rule, perAccount: LoginThrottle.Rule) -> any LoginLimiter
}
