import struct Foundation.Date

/// The persistence port. Core's services talk only to this; `DesklineStore` provides the
/// file-backed implementation (and later PostgreSQL).
///
/// The protocol lives in Core, not in DesklineStore, because Core's services depend on it and the
/// backends depend on Core's types: putting it in DesklineStore would make the two modules depend
/// on each other.
///
/// Implementations enforce structural invariants under their own lock (ids unique, email unique
/// within a tenant, one login per customer, both sides of the user↔customer link written), throw
/// ``DesklineError`` (`conflict`, `notFound`, `storage`), never block the caller's thread with
/// I/O, and make every change durable before returning.
public protocol Store: Sendable {
    /// Creates a tenant; `conflict` if the id is taken.
    func createTenant(_ tenant: Tenant) async throws(DesklineError)
    func tenant(_ id: TenantID) async throws(DesklineError) -> Tenant?
    func tenants() async throws(DesklineError) -> [Tenant]

    /// Creates a customer record with a fresh id; `notFound` if the tenant does not exist.
    func createCustomer(_ customer: NewCustomer, in tenant: TenantID, at time: Date) async throws(DesklineError) -> Customer
    func customer(_ id: CustomerID, in tenant: TenantID) async throws(DesklineError) -> Customer?

    /// Creates a user with a fresh id. For a customer user also links the customer record back
    /// (`conflict` if it already has a login). `conflict` if the email is taken in the tenant.
    func createUser(_ user: NewUser, in tenant: TenantID, at time: Date) async throws(DesklineError) -> User
    func user(_ id: UserID, in tenant: TenantID) async throws(DesklineError) -> User?
    /// Every account, in any tenant, whose login email is `email` (already normalised).
    func accounts(withEmail email: String) async throws(DesklineError) -> [AccountRef]
    /// Replaces a user's password hash; `notFound` if there is no such user.
    func setPasswordHash(_ hash: PasswordHash, for user: UserID, in tenant: TenantID) async throws(DesklineError)
}

/// Runs slow, blocking work (password hashing) away from the caller, e.g. on a thread pool.
/// May refuse with ``DesklineError/busy(_:)`` when too much work is already waiting.
public protocol BlockingExecutor: Sendable {
    func run<T: Sendable>(_ work: @escaping @Sendable () throws(DesklineError) -> T) async throws(DesklineError) -> T
}
