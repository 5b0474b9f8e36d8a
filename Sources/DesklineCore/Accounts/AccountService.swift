import struct Foundation.Date

/// Accounts: tenants, customer records, logins, passwords. Used by the admin CLI and by the
/// gateway's LOGIN and ME. The access rules for accounts live here.
public struct AccountService: Sendable {
    let store: any Store
    let hasher: PasswordHasher
    let passwordWork: any BlockingExecutor
    let now: @Sendable () -> Date

    /// - Parameters:
    ///   - hasher: cost for new hashes; verification uses each hash's own stored cost.
    ///   - passwordWork: where hashing runs; never an event loop.
    public init(store: any Store, hasher: PasswordHasher, passwordWork: any BlockingExecutor,
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.hasher = hasher
        self.passwordWork = passwordWork
        self.now = now
    }

    // MARK: Administration

    public func createTenant(id: String, name: String) async throws(DesklineError) -> Tenant {
        let tenant = Tenant(id: try TenantID(validating: id), name: try InputRules.name(name, field: "tenant name"),
                            createdAt: now())
        try await store.createTenant(tenant)
        return tenant
    }

    /// Sets (or with nil removes) the message of the day IRC clients are shown at login.
    public func setMOTD(of id: TenantID, to raw: String?) async throws(DesklineError) -> Tenant {
        guard var tenant = try await store.tenant(id) else { throw .notFound("no tenant \(id)") }
        tenant.motd = try raw.map { (text) throws(DesklineError) in try InputRules.motd(text) }
        return try await store.updateTenant(tenant)
    }

    public func createCustomer(in tenant: TenantID, name: String, email: String, phone: String?) async throws(DesklineError) -> Customer {
        let draft = NewCustomer(name: try InputRules.name(name), email: try InputRules.email(email),
                                phone: try phone.map { (p) throws(DesklineError) in try InputRules.phone(p) })
        return try await store.createCustomer(draft, in: tenant, at: now())
    }

    /// Creates a login. A customer login must name its customer record and use exactly that
    /// record's email (the seed's `createCustomerUser` rule); staff logins must not name one.
    /// `tenantLoginOnly`: see ``User/tenantLoginOnly``.
    public func createUser(in tenant: TenantID, email rawEmail: String, displayName: String?, role: Role,
                           customer customerId: CustomerID?, password: String,
                           tenantLoginOnly: Bool = false) async throws(DesklineError) -> User {
        let email = try InputRules.email(rawEmail)
        let password = try InputRules.newPassword(password)
        var name = try displayName.map { (n) throws(DesklineError) in try InputRules.name(n, field: "display name") }
        switch (role, customerId) {
        case (.customer, nil):
            throw .invalidArgument("a customer login needs the customer record it belongs to (--customer ID)")
        case (.customer, let id?):
            guard let customer = try await store.customer(id, in: tenant) else {
                throw .notFound("no customer \(id) in tenant \(tenant)")
            }
            guard customer.email == email else {
                throw .invalidArgument("email \(email) does not match customer \(id)'s email \(customer.email); a customer login must use the customer record's email")
            }
            if name == nil { name = customer.name }
        case (_, .some):
            throw .invalidArgument("only customer logins belong to a customer record; drop --customer for role \(role.rawValue)")
        case (_, nil):
            break
        }
        let hash = try await newHash(password)
        let draft = NewUser(email: email, displayName: name ?? String(email.prefix(while: { $0 != "@" })),
                            role: role, passwordHash: hash, customerId: customerId, tenantLoginOnly: tenantLoginOnly)
        return try await store.createUser(draft, in: tenant, at: now())
    }

    /// Sets a new password for the login `email` in `tenant` (operator action).
    public func setPassword(in tenant: TenantID, email rawEmail: String, password: String) async throws(DesklineError) {
        let email = try InputRules.email(rawEmail)
        let password = try InputRules.newPassword(password)
        guard let ref = try await store.accounts(withEmail: email).first(where: { $0.tenantId == tenant }) else {
            throw .notFound("no login \(email) in tenant \(tenant)")
        }
        let hash = try await newHash(password)
        try await store.setPasswordHash(hash, for: ref.userId, in: tenant, ifCurrent: nil)
    }

    /// A new hash of `password` at the configured cost, derived on the password workers.
    private func newHash(_ password: String) async throws(DesklineError) -> PasswordHash {
        let hasher = self.hasher
        return try await passwordWork.run { () throws(DesklineError) in try hasher.hash(password) }
    }

    // MARK: Login

    /// Checks credentials and returns the session's scope.
    ///
    /// `login` is `email` or `tenant/email` (both case-insensitive). A bare email must belong to exactly one account in
    /// the whole server that answers a bare email (``User/answersBareEmail``: not one a tenant's
    /// admin made); an email used in several tenants must be qualified with the tenant.
    /// Every failure — unknown tenant, unknown email, ambiguous email, wrong password — throws the
    /// same ``DesklineError/loginFailed`` after the same single password derivation, so neither
    /// the reply nor its timing tells which tenants or accounts exist.
    public func login(_ login: String, password: String) async throws(DesklineError) -> SessionScope {
        let hasher = self.hasher
        guard let user = try await candidate(for: login) else {
            _ = try await passwordWork.run { () throws(DesklineError) in hasher.burnVerification() }
            throw .loginFailed
        }
        let stored = user.passwordHash
        let ok = try await passwordWork.run { () throws(DesklineError) in hasher.verify(password, against: stored) }
        guard ok else { throw .loginFailed }
        // A hash weaker than the configured cost is upgraded while the password is at hand, so
        // raising the cost reaches every account that logs in. (Until then, such an account's
        // failed logins take its old cost's time: see README, "Configuration".) A stronger one
        // is kept: lowering the setting never weakens stored hashes, and costs no rewrite.
        let cost = hasher.cost
        if stored.algorithm != "scrypt" || stored.n < cost.n || stored.r < cost.r || stored.p < cost.p {
            if let upgraded = try? await newHash(password) {
                _ = try? await store.setPasswordHash(upgraded, for: user.id, in: user.tenantId, ifCurrent: stored)
            }
        }
        return SessionScope(tenantId: user.tenantId, userId: user.id, role: user.role, customerId: user.customerId)
    }

    private func candidate(for login: String) async throws(DesklineError) -> User? {
        var tenant: TenantID?
        var rawEmail = Substring(login)
        if let slash = login.firstIndex(of: "/") {
            guard let t = TenantID(rawValue: login[..<slash].lowercased()) else { return nil }
            tenant = t
            rawEmail = login[login.index(after: slash)...]
        }
        guard let email = try? InputRules.email(String(rawEmail)) else { return nil }
        var refs = try await store.accounts(withEmail: email)
        if let tenant {
            refs = refs.filter { $0.tenantId == tenant }
            // Only a user whose stored email is the login counts: an index line left stale (an
            // import cut short by a crash) never logs into whoever holds that id now.
            var users: [User] = []
            for ref in refs {
                if let user = try await store.storedUser(ref.userId, in: ref.tenantId), user.email == email { users.append(user) }
            }
            return users.count == 1 ? users[0] : nil
        }
        let users = try await bareEmailLogins(among: refs, email: email)
        return users.count == 1 ? users[0] : nil
    }

    /// The logins a bare `LOGIN <email>` can reach (``User/answersBareEmail``: not those a
    /// tenant's admin made), as stored now. `email` must be normalised (``InputRules/email(_:)``).
    public func bareEmailLogins(_ email: String) async throws(DesklineError) -> [User] {
        try await bareEmailLogins(among: store.accounts(withEmail: email), email: email)
    }

    /// Each account read from its file (almost always one).
    private func bareEmailLogins(among refs: [AccountRef], email: String) async throws(DesklineError) -> [User] {
        var users: [User] = []
        for ref in refs {
            if let user = try await store.storedUser(ref.userId, in: ref.tenantId), user.email == email, user.answersBareEmail { users.append(user) }
        }
        return users
    }

    // MARK: Self-service

    /// The profile fields a customer may change.
    public enum ProfileField: String, Sendable, CaseIterable {
        case name
        case phone
    }

    /// Changes the caller's own customer record: `name` (also their login's display name) or
    /// `phone` (`none` removes it). Customers only: staff profiles are managed by admins.
    public func updateProfile(_ scope: SessionScope, _ field: ProfileField, to raw: String) async throws(DesklineError) -> Customer {
        guard scope.role == .customer, let id = scope.customerId else {
            throw .forbidden("only customers have a customer record to edit")
        }
        switch field {
        case .name:
            let name = try InputRules.name(raw)
            return try await store.updateCustomer(id, in: scope.tenantId) { customer, user in
                customer.name = name
                user?.displayName = name
            }
        case .phone:
            let phone = raw.trimmingWhitespace().lowercased() == "none" ? nil : try InputRules.phone(raw)
            return try await store.updateCustomer(id, in: scope.tenantId) { customer, _ in customer.phone = phone }
        }
    }

    /// Changes the caller's own password after checking the current one.
    public func changePassword(_ scope: SessionScope, current: String, new rawNew: String) async throws(DesklineError) {
        let new = try InputRules.newPassword(rawNew)
        guard let user = try await store.storedUser(scope.userId, in: scope.tenantId) else {
            throw .notFound("your account no longer exists")
        }
        let hasher = self.hasher
        let stored = user.passwordHash
        let ok = try await passwordWork.run { () throws(DesklineError) in hasher.verify(current, against: stored) }
        guard ok else { throw .wrongPassword }
        let hash = try await newHash(new)
        guard try await store.setPasswordHash(hash, for: user.id, in: scope.tenantId, ifCurrent: stored) else {
            throw .conflict("your password was changed meanwhile; nothing was changed")
        }
    }

    // MARK: Tenant administration (admins, over the protocol)

    /// The agents and admins of the caller's tenant, by name (for AGENTS).
    public func staff(_ scope: SessionScope) async throws(DesklineError) -> [User] {
        guard scope.role.isStaff else { throw .forbidden("only agents and admins see the helpdesk's staff") }
        return try await store.users(in: scope.tenantId).filter(\.role.isStaff)
            .sorted { ($0.displayName, $0.email) < ($1.displayName, $1.email) }
    }

    private func requireAdmin(_ scope: SessionScope) throws(DesklineError) {
        guard scope.role == .admin else { throw .forbidden("only admins manage customers") }
    }

    /// An admin creates a customer record in their own tenant.
    public func adminCreateCustomer(_ scope: SessionScope, name: String, email: String, phone: String?) async throws(DesklineError) -> Customer {
        try requireAdmin(scope)
        return try await createCustomer(in: scope.tenantId, name: name, email: email, phone: phone)
    }

    /// An admin gives a customer record of their tenant a login (with the record's email, the
    /// seed's createCustomerUser rule). Returns the user and its generated initial password.
    public func adminCreateCustomerLogin(_ scope: SessionScope, customer id: CustomerID) async throws(DesklineError) -> (User, password: String) {
        try requireAdmin(scope)
        guard let customer = try await store.customer(id, in: scope.tenantId) else {
            throw .notFound("No customer \(id) in your helpdesk.")
        }
        let password = PasswordGenerator.make()
        // A login made by a tenant's admin logs in as <tenant>/<email> only (User.tenantLoginOnly).
        let user = try await createUser(in: scope.tenantId, email: customer.email, displayName: nil, role: .customer,
                                        customer: id, password: password, tenantLoginOnly: true)
        return (user, password)
    }

    /// An admin resets the password of a customer's login in their tenant; returns the new one.
    public func adminResetCustomerPassword(_ scope: SessionScope, customer id: CustomerID) async throws(DesklineError) -> (Customer, password: String) {
        try requireAdmin(scope)
        guard let customer = try await store.customer(id, in: scope.tenantId) else {
            throw .notFound("No customer \(id) in your helpdesk.")
        }
        let noLogin = DesklineError.customerHasNoLogin(id)
        guard customer.userId != nil else { throw noLogin }
        let password = PasswordGenerator.make()
        let hash = try await newHash(password)
        // From now on the login answers only <tenant>/<email> (User.tenantLoginOnly): otherwise
        // an admin could reset a login that answers the bare email and try the bare LOGIN, which
        // works exactly when no other tenant has a login for that email.
        _ = try await store.updateCustomer(id, in: scope.tenantId) { _, user throws(DesklineError) in
            guard user != nil else { throw noLogin }
            user?.passwordHash = hash
            user?.tenantLoginOnly = true
        }
        return (customer, password)
    }

    // MARK: Profile

    /// What `ME` shows: the caller's own user, tenant and (customers) customer record.
    public struct Profile: Sendable, Equatable {
        public var user: User
        public var tenant: Tenant
        public var customer: Customer?
    }

    public func profile(_ scope: SessionScope) async throws(DesklineError) -> Profile {
        guard let user = try await store.user(scope.userId, in: scope.tenantId),
              let tenant = try await store.tenant(scope.tenantId)
        else { throw .notFound("your account no longer exists") }
        var customer: Customer?
        if let cid = scope.customerId {
            customer = try await store.customer(cid, in: scope.tenantId)
        }
        return Profile(user: user, tenant: tenant, customer: customer)
    }
}
