import DesklineCore
import Synchronization

/// The IRC nicks of every tenant's users. A nick comes from the display name (letters, digits
/// and `_`), is unique within the tenant and stable for the user: users are taken in the order
/// of their ids, and a user whose nick is taken by an earlier one (or by the service) gets the
/// number of their id appended. So adding a user never renames anyone; renaming a user renames
/// only them (and, in a rare tie, a later namesake).
///
/// Loaded per tenant when an IRC session registers (a user added since then is looked up with
/// the nick their name gives, plus their id's number when it is taken).
final class NickDirectory: Sendable {
    /// The service user's nick; no user gets it.
    static let service = "Deskline"
    /// Longest nick (ISUPPORT NICKLEN).
    static let maximumLength = 30

    struct Tenant: Sendable {
        var nickOf: [UserID: String] = [:]
        /// Lower-cased nick → user.
        var userOf: [String: UserID] = [:]
        var staff: Set<UserID> = []
        /// A customer record's login and its name.
        var customerUser: [CustomerID: (UserID, String)] = [:]
        /// When the users were last read (nil: never; only nicks assigned on the fly).
        var loadedAt: ContinuousClock.Instant?
    }

    /// How long a tenant's user list is trusted before an IRC login or JOIN reads it again (to
    /// learn of users added meanwhile: new customers' logins, for NAMES and WHOIS).
    static let refreshInterval: Duration = .seconds(60)

    private let tenants = Mutex<[TenantID: Tenant]>([:])

    /// Whether the tenant's users should be read (again) before relying on the directory.
    func needsLoading(_ tenant: TenantID, now: ContinuousClock.Instant = .now) -> Bool {
        tenants.withLock { all in
            guard let loaded = all[tenant]?.loadedAt else { return true }
            return now - loaded >= Self.refreshInterval
        }
    }

    /// Learns a tenant's users. A user who has a nick keeps it (for the process's life); the
    /// others get theirs in the order of their ids, so a restart, which assigns every nick in
    /// that order, gives everyone the same nick again.
    func load(_ users: [User], in tenant: TenantID, now: ContinuousClock.Instant = .now) {
        let ordered = users.map { (Self.order($0.id), $0) }.sorted { $0.0 < $1.0 }.map(\.1)
        tenants.withLock { all in
            var t = all[tenant] ?? Tenant()
            for user in ordered {
                if t.nickOf[user.id] == nil {
                    let nick = Self.available(Self.base(user.displayName), user.id, in: t)
                    t.nickOf[user.id] = nick
                    t.userOf[nick.lowercased()] = user.id
                }
                if user.role.isStaff { t.staff.insert(user.id) }
                if let customer = user.customerId { t.customerUser[customer] = (user.id, user.displayName) }
            }
            t.loadedAt = now
            all[tenant] = t
        }
    }

    /// The nick of a user; `name` is used for a user the directory has not seen.
    func nick(of user: UserID, named name: String, in tenant: TenantID) -> String {
        tenants.withLock { all in
            if let nick = all[tenant]?.nickOf[user] { return nick }
            var t = all[tenant] ?? Tenant()
            let nick = Self.available(Self.base(name), user, in: t)
            t.nickOf[user] = nick
            t.userOf[nick.lowercased()] = user
            all[tenant] = t
            return nick
        }
    }

    /// The nick of a user the directory knows, or nil.
    func knownNick(of user: UserID, in tenant: TenantID) -> String? {
        tenants.withLock { $0[tenant]?.nickOf[user] }
    }

    /// The user with this nick (ASCII case-insensitive), if any.
    func user(withNick nick: String, in tenant: TenantID) -> UserID? {
        tenants.withLock { $0[tenant]?.userOf[nick.lowercased()] }
    }

    func isStaff(_ user: UserID, in tenant: TenantID) -> Bool {
        tenants.withLock { $0[tenant]?.staff.contains(user) ?? false }
    }

    /// The login of a customer record, and its display name.
    func customerUser(_ customer: CustomerID, in tenant: TenantID) -> (UserID, String)? {
        tenants.withLock { $0[tenant]?.customerUser[customer] }
    }

    /// `name` as a nick: ASCII letters and digits, other runs become one `_`, not starting with
    /// a digit or `-`, at most ``maximumLength`` bytes.
    static func base(_ name: String) -> String {
        var out = ""
        var gap = false
        for scalar in name.unicodeScalars {
            if scalar.isASCII, scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "-" {
                if gap, !out.isEmpty { out += "_" }
                gap = false
                out.unicodeScalars.append(scalar)
            } else {
                gap = true
            }
        }
        if out.isEmpty { out = "user" }
        if let first = out.unicodeScalars.first, ("0"..."9").contains(first) || first == "-" { out = "_" + out }
        return String(out.prefix(maximumLength))
    }

    private static func available(_ base: String, _ user: UserID, in t: Tenant) -> String {
        func taken(_ nick: String) -> Bool { nick.lowercased() == service.lowercased() || t.userOf[nick.lowercased()] != nil }
        if !taken(base) { return base }
        let suffix = String(user.rawValue.filter(\.isNumber).prefix(10))
        var candidate = String(base.prefix(maximumLength - suffix.count)) + suffix
        var extra = 1
        while taken(candidate) {
            let tail = "\(suffix)_\(extra)"
            candidate = String(base.prefix(maximumLength - tail.count)) + tail
            extra += 1
        }
        return candidate
    }

    /// Users in id order: `u2` before `u10`.
    private static func order(_ id: UserID) -> (Int, String) {
        (Int(id.rawValue.filter(\.isNumber)) ?? Int.max, id.rawValue)
    }
}
