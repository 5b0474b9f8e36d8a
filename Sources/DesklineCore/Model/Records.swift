import struct Foundation.Date

/// A company served by Deskline. Everything else lives inside exactly one tenant.
public struct Tenant: Sendable, Codable, Equatable {
    public var id: TenantID
    public var name: String
    public var createdAt: Date
    /// The message of the day IRC clients show after logging in (`deskline tenant motd`).
    public var motd: String?

    public init(id: TenantID, name: String, createdAt: Date, motd: String? = nil) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.motd = motd
    }
}

/// What a user may do is decided by their role.
public enum Role: String, Sendable, Codable, CaseIterable, Comparable {
    case customer
    case agent
    case admin

    public static func < (lhs: Role, rhs: Role) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// Agents and admins work the helpdesk; customers are served by it.
    public var isStaff: Bool { self != .customer }
}

/// A customer record: the person or account the helpdesk serves. It may have a login
/// (``userId``), linked both ways with the user's ``User/customerId``.
public struct Customer: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable {
        case active
        case inactive
    }

    public var id: CustomerID
    public var tenantId: TenantID
    public var name: String
    public var email: String
    public var phone: String?
    public var status: Status
    public var userId: UserID?
    public var createdAt: Date

    public init(id: CustomerID, tenantId: TenantID, name: String, email: String, phone: String?,
                status: Status = .active, userId: UserID? = nil, createdAt: Date) {
        self.id = id
        self.tenantId = tenantId
        self.name = name
        self.email = email
        self.phone = phone
        self.status = status
        self.userId = userId
        self.createdAt = createdAt
    }
}

/// A login: customer, agent or admin of one tenant.
public struct User: Sendable, Codable, Equatable {
    public var id: UserID
    public var tenantId: TenantID
    /// Normalised (trimmed, lower case); unique within the tenant.
    public var email: String
    public var displayName: String
    public var role: Role
    public var passwordHash: PasswordHash
    /// Set for customer users only: the customer record this login belongs to.
    public var customerId: CustomerID?
    public var createdAt: Date
    /// True for a login a tenant's admin made (`CUSTOMER LOGIN`): it logs in only as
    /// `<tenant>/<email>`, and a bare `LOGIN <email>` does not count it. So an admin's new login
    /// neither changes what the bare email means for the same email's logins in other tenants
    /// nor lets the admin find out whether there are any. (Absent in older files: false.)
    public var tenantLoginOnly: Bool?

    public init(id: UserID, tenantId: TenantID, email: String, displayName: String, role: Role,
                passwordHash: PasswordHash, customerId: CustomerID?, createdAt: Date, tenantLoginOnly: Bool? = nil) {
        self.id = id
        self.tenantId = tenantId
        self.email = email
        self.displayName = displayName
        self.role = role
        self.passwordHash = passwordHash
        self.customerId = customerId
        self.createdAt = createdAt
        self.tenantLoginOnly = tenantLoginOnly
    }

    /// Whether a bare `LOGIN <email>` may reach this login (see ``tenantLoginOnly``).
    public var answersBareEmail: Bool { tenantLoginOnly != true }
}

/// A new user as handed to the store, which allocates the id.
public struct NewUser: Sendable {
    public var email: String
    public var displayName: String
    public var role: Role
    public var passwordHash: PasswordHash
    public var customerId: CustomerID?
    /// See ``User/tenantLoginOnly``.
    public var tenantLoginOnly: Bool

    public init(email: String, displayName: String, role: Role, passwordHash: PasswordHash, customerId: CustomerID?,
                tenantLoginOnly: Bool = false) {
        self.email = email
        self.displayName = displayName
        self.role = role
        self.passwordHash = passwordHash
        self.customerId = customerId
        self.tenantLoginOnly = tenantLoginOnly
    }
}

/// A new customer record as handed to the store, which allocates the id.
public struct NewCustomer: Sendable {
    public var name: String
    public var email: String
    public var phone: String?

    public init(name: String, email: String, phone: String?) {
        self.name = name
        self.email = email
        self.phone = phone
    }
}

/// Where a login email lives: the store's answer to "which accounts have this email".
public struct AccountRef: Sendable, Codable, Hashable {
    public var tenantId: TenantID
    public var userId: UserID

    public init(tenantId: TenantID, userId: UserID) {
        self.tenantId = tenantId
        self.userId = userId
    }
}
