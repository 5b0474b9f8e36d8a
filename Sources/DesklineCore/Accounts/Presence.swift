import Synchronization

/// What the rest of a helpdesk sees of a user: their logged-in sessions (on every node serving
/// the store) and their away message.
public struct UserPresence: Sendable, Equatable {
    public var sessions: Int
    /// Set by AWAY, cleared by BACK and when the user's last session (on any node) ends.
    public var away: String?

    public init(sessions: Int, away: String? = nil) {
        self.sessions = sessions
        self.away = away
    }
}

/// Who is logged in and who is away, across every gateway node that serves one store
/// (docs/ARCHITECTURE.md, "Several nodes"). A node reports its own sessions; it reads everyone's.
///
/// A store used by one node keeps this in memory (``LocalPresence``); a store that several nodes
/// share keeps it where they all see it (PostgreSQL: one row per node and user, and a heartbeat
/// per node, so a node that died stops counting after a documented time).
public protocol PresenceDirectory: Sendable {
    /// This node has `sessions` sessions of `user` now (0: none left here). Called in the order of
    /// the changes, under the caller's lock: it must return at once, without waiting or calling
    /// back.
    func report(_ user: UserID, in tenant: TenantID, sessions: Int)
    /// Returns once every ``report(_:in:sessions:)`` made before it can be seen by the other
    /// nodes (or could not be, which the directory logs and repairs by itself).
    func published() async
    /// Sets (or with nil clears) `user`'s away message, on every node.
    func setAway(_ reason: String?, for user: UserID, in tenant: TenantID) async throws(DesklineError)
    /// The tenant's users with a session on any node, with their away messages. A user without a
    /// session is not listed.
    func presence(in tenant: TenantID) async throws(DesklineError) -> [UserID: UserPresence]

    /// This node's sessions of `user` follow ticket `ticket` now (true: the first one JOINed it;
    /// false: the last one left or ended). Same contract as ``report(_:in:sessions:)``.
    func reportFollowing(_ user: UserID, _ ticket: TicketID, in tenant: TenantID, _ following: Bool)
    /// The staff following `ticket` from other nodes, as last learnt (never waits).
    func followersElsewhere(of ticket: TicketID, in tenant: TenantID) -> Set<UserID>
    /// Calls `handler` (on any thread) whenever ``followersElsewhere(of:in:)`` of a ticket
    /// changed. Set once, before the node serves.
    func whenFollowersChange(_ handler: @escaping @Sendable (TenantID, TicketID) -> Void)
}

extension PresenceDirectory {
    /// One node: nobody follows anything elsewhere.
    public func reportFollowing(_ user: UserID, _ ticket: TicketID, in tenant: TenantID, _ following: Bool) {}
    public func followersElsewhere(of ticket: TicketID, in tenant: TenantID) -> Set<UserID> { [] }
    public func whenFollowersChange(_ handler: @escaping @Sendable (TenantID, TicketID) -> Void) {}
}

/// Presence on one node: what its own sessions are.
public final class LocalPresence: PresenceDirectory {
    private struct Key: Hashable {
        var tenant: TenantID
        var user: UserID
    }

    private let users = Mutex<[Key: UserPresence]>([:])

    public init() {}

    public func report(_ user: UserID, in tenant: TenantID, sessions: Int) {
        users.withLock { users in
            let key = Key(tenant: tenant, user: user)
            if sessions > 0 {
                users[key, default: UserPresence(sessions: 0)].sessions = sessions
            } else {
                users[key] = nil // (and with the last session, the away message)
            }
        }
    }

    public func published() async {}

    public func setAway(_ reason: String?, for user: UserID, in tenant: TenantID) async throws(DesklineError) {
        users.withLock { $0[Key(tenant: tenant, user: user)]?.away = reason }
    }

    public func presence(in tenant: TenantID) async throws(DesklineError) -> [UserID: UserPresence] {
        users.withLock { users in
            var found: [UserID: UserPresence] = [:]
            for (key, value) in users where key.tenant == tenant { found[key.user] = value }
            return found
        }
    }
}
