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
/// I/O, and make every change durable before returning. A change is all or nothing: one
/// that throws `storage` is undone (in the file store, should the undo fail too, by the next
/// account change or start at the latest: docs/STORAGE.md).
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
    /// A user; may come from a list the store keeps for a moment (at most a second behind a
    /// change another process made).
    func user(_ id: UserID, in tenant: TenantID) async throws(DesklineError) -> User?
    /// A user as stored right now, never from anything kept: for checking credentials, so a
    /// password the admin CLI changed counts from the very next LOGIN or PASSWD.
    func storedUser(_ id: UserID, in tenant: TenantID) async throws(DesklineError) -> User?
    /// Every account, in any tenant, whose login email is `email` (already normalised).
    func accounts(withEmail email: String) async throws(DesklineError) -> [AccountRef]
    /// Replaces a user's password hash; `notFound` if there is no such user. With `expected`,
    /// only if the stored hash is still that one (returns false otherwise), so an upgrade of an
    /// old hash never overwrites a password changed meanwhile.
    @discardableResult
    func setPasswordHash(_ hash: PasswordHash, for user: UserID, in tenant: TenantID,
                         ifCurrent expected: PasswordHash?) async throws(DesklineError) -> Bool
    /// Changes a customer record (and, if it has a login, that user) atomically under the
    /// account lock. `change` may throw to refuse; then nothing is written.
    func updateCustomer(_ id: CustomerID, in tenant: TenantID,
                        _ change: @escaping @Sendable (inout Customer, inout User?) throws(DesklineError) -> Void) async throws(DesklineError) -> Customer

    // MARK: Tickets (written only by the server)

    /// Creates a ticket with the next number of the tenant, and lists it in its customer's index.
    /// `notify` works out, from the new ticket, who is told and what their inboxes get: those
    /// lines are stored with the ticket, in one commit. `whenStored` runs on the tenant's writer
    /// once the ticket is durable, in the order the tenant's changes were stored (as for
    /// ``updateTicket(_:in:appending:at:notifying:whenQueued:whenStored:_:)``), before the
    /// caller resumes.
    func createTicket(customer: CustomerID, subject: String, in tenant: TenantID, at time: Date,
                      notifying notify: TicketCreationNotifier?, whenStored: StoredTicketCreationHandler?) async throws(DesklineError) -> Ticket
    func ticket(_ id: TicketID, in tenant: TenantID) async throws(DesklineError) -> Ticket?
    /// The numbers of the customer's tickets, from the customer's own index.
    func ticketIDs(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [TicketID]
    /// Every ticket of a tenant (the staff queue).
    func tickets(in tenant: TenantID) async throws(DesklineError) -> [Ticket]
    /// The customer's tickets, read from the customer's own index (not a scan of the tenant).
    func tickets(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [Ticket]
    /// Atomically with respect to other writes of the ticket: reads it, lets `change` check and
    /// modify it (throwing refuses the whole write), appends `entry` (if any) with the next
    /// sequence number, and stores the ticket. Returns both as stored. `nil` if no such ticket.
    ///
    /// With `notify`, in the same durable write: once the entry is known, `notify` says who is
    /// told (given a way to look up the ticket's customer's login), and that notification is
    /// appended to each recipient's inbox. So a message and its notifications cost one commit,
    /// and are stored together or not at all.
    ///
    /// `whenQueued` is called (in the calling task) once the write has its place in the store's
    /// order: a later write is stored after it, so the caller may start one before this one is
    /// durable. `whenStored` runs once the write is durable, before this call returns, and the
    /// tenant's writes run it in the order they were stored: what it publishes comes in ticket
    /// order without the caller waiting for one write before queueing the next. It must not block.
    func updateTicket(_ id: TicketID, in tenant: TenantID, appending entry: TicketEntryDraft?, at time: Date,
                      notifying notify: EntryNotifier?, whenQueued: (@Sendable () -> Void)?, whenStored: StoredTicketHandler?,
                      _ change: @escaping @Sendable (inout Ticket) throws(DesklineError) -> Void) async throws(DesklineError) -> (Ticket, TicketEntry?, EntryNotice?)?
    /// Entries of a ticket, oldest first: those after `after` and before `before`, at most
    /// `limit`, taken from the newest end unless `after` is given.
    func entries(of ticket: TicketID, in tenant: TenantID, after: EntryPosition?, before: EntryPosition?, limit: Int,
                 includeNotes: Bool) async throws(DesklineError) -> [TicketEntry]

    // MARK: Users and inboxes

    /// Every user of a tenant.
    func users(in tenant: TenantID) async throws(DesklineError) -> [User]
    /// The ids of a tenant's agents and admins: whom a ticket event may notify (every message
    /// asks, so a store may keep them).
    func staff(in tenant: TenantID) async throws(DesklineError) -> Staff
    /// Appends the same notification to each user's inbox, numbering it per user (its `id` is
    /// replaced by the user's next number).
    func appendNotification(_ notification: Notification, for users: [UserID], in tenant: TenantID) async throws(DesklineError)
    /// How many of a user's notifications are unread (without reading the notifications).
    func unreadNotificationCount(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Int
    /// A user's inbox (empty if they never got anything).
    func inbox(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Inbox
    /// Marks notification `id` (or, with nil, all) read; `notFound` for an id never handed out.
    func markNotificationsRead(_ id: Int?, of user: UserID, in tenant: TenantID) async throws(DesklineError)

    // MARK: Call requests

    func createCall(customer: CustomerID, ticket: TicketID?, phone: String, note: String?,
                    in tenant: TenantID, at time: Date) async throws(DesklineError) -> CallRequest
    func calls(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [CallRequest]
    /// Every call request of a tenant (the agents' call queue).
    func calls(in tenant: TenantID) async throws(DesklineError) -> [CallRequest]
    /// Reads a call, lets `change` check and modify it (throwing refuses), stores it. Nil if none.
    func updateCall(_ id: CallID, in tenant: TenantID, at time: Date,
                    _ change: @escaping @Sendable (inout CallRequest) throws(DesklineError) -> Void) async throws(DesklineError) -> CallRequest?
}

extension Store {
    /// ``createTicket(customer:subject:in:at:notifying:whenStored:)`` without notifications.
    public func createTicket(customer: CustomerID, subject: String, in tenant: TenantID, at time: Date) async throws(DesklineError) -> Ticket {
        try await createTicket(customer: customer, subject: subject, in: tenant, at: time, notifying: nil, whenStored: nil)
    }

    /// ``updateTicket(_:in:appending:at:notifying:_:)`` without notifications.
    public func updateTicket(_ id: TicketID, in tenant: TenantID, appending entry: TicketEntryDraft?, at time: Date,
                             _ change: @escaping @Sendable (inout Ticket) throws(DesklineError) -> Void) async throws(DesklineError) -> (Ticket, TicketEntry?)? {
        try await updateTicket(id, in: tenant, appending: entry, at: time, notifying: nil, whenQueued: nil, whenStored: nil, change).map { ($0.0, $0.1) }
    }

    /// ``updateTicket(_:in:appending:at:notifying:whenQueued:whenStored:_:)`` without callbacks.
    public func updateTicket(_ id: TicketID, in tenant: TenantID, appending entry: TicketEntryDraft?, at time: Date,
                             notifying notify: EntryNotifier?,
                             _ change: @escaping @Sendable (inout Ticket) throws(DesklineError) -> Void) async throws(DesklineError) -> (Ticket, TicketEntry?, EntryNotice?)? {
        try await updateTicket(id, in: tenant, appending: entry, at: time, notifying: notify, whenQueued: nil, whenStored: nil, change)
    }
}

extension Store {
    public func staff(in tenant: TenantID) async throws(DesklineError) -> Staff {
        Staff(try await users(in: tenant))
    }
}

/// A tenant's agents and admins, by id.
public struct Staff: Sendable, Equatable {
    public var agents: [UserID]
    public var admins: [UserID]

    public init(_ users: [User]) {
        agents = users.filter { $0.role == .agent }.map(\.id)
        admins = users.filter { $0.role == .admin }.map(\.id)
    }
}

/// Runs on the store's writer once a ticket change is durable, in the order changes were stored.
public typealias StoredTicketHandler = @Sendable (_ ticket: Ticket, _ entry: TicketEntry?, _ notice: EntryNotice?) -> Void


/// Runs on the store's writer once a new ticket is durable, in the order the tenant's changes
/// were stored.
public typealias StoredTicketCreationHandler = @Sendable (_ ticket: Ticket, _ notice: EntryNotice?) -> Void

/// Works out, inside the store's write, who is told about a new ticket and what their inboxes get.
public typealias TicketCreationNotifier = @Sendable (_ ticket: Ticket) -> EntryNotice

/// Who is told about a ticket entry (or a new ticket), and what goes into their inboxes.
public struct EntryNotice: Sendable, Equatable {
    /// The login of the ticket's customer (nil if the customer has none).
    public var customerUserId: UserID?
    public var recipients: [UserID]
    public var notification: Notification

    public init(customerUserId: UserID?, recipients: [UserID], notification: Notification) {
        self.customerUserId = customerUserId
        self.recipients = recipients
        self.notification = notification
    }
}

/// Works out an entry's ``EntryNotice`` inside the store's write: from the stored ticket and
/// entry, and `customerLogin`, which reads the ticket's customer's login when asked.
public typealias EntryNotifier = @Sendable (_ ticket: Ticket, _ entry: TicketEntry,
                                            _ customerLogin: () throws -> UserID?) throws -> EntryNotice

/// An entry to append; the store assigns its sequence number.
public struct TicketEntryDraft: Sendable {
    public var kind: TicketEntry.Kind
    public var authorId: UserID
    public var authorName: String
    public var authorRole: Role
    public var text: String

    public init(kind: TicketEntry.Kind, authorId: UserID, authorName: String, authorRole: Role, text: String) {
        self.kind = kind
        self.authorId = authorId
        self.authorName = authorName
        self.authorRole = authorRole
        self.text = text
    }
}

/// Runs slow, blocking work (password hashing) away from the caller, e.g. on a thread pool.
/// May refuse with ``DesklineError/busy(_:)`` when too much work is already waiting.
public protocol BlockingExecutor: Sendable {
    func run<T: Sendable>(_ work: @escaping @Sendable () throws(DesklineError) -> T) async throws(DesklineError) -> T
}
