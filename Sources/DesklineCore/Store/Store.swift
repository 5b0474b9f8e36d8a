import struct Foundation.Date

/// The persistence port. Core's services talk only to this; `DesklineStore` provides the
/// file-backed implementation (and later PostgreSQL), ``InMemoryStore`` the in-memory twin.
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
    /// Replaces an existing tenant's record (its name, its MOTD); `notFound` if there is none.
    /// Its id and creation time stay as stored.
    func updateTenant(_ tenant: Tenant) async throws(DesklineError) -> Tenant

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

    /// Every customer record of a tenant (for `deskline export`; none for a tenant that is not).
    func customers(in tenant: TenantID) async throws(DesklineError) -> [Customer]
    /// The last customer and user numbers the tenant handed out (`notFound` for no tenant).
    func accountNumbers(in tenant: TenantID) async throws(DesklineError) -> AccountNumbers
    /// Loads a whole tenant (`deskline import`), as one unit: all of it or, on any failure,
    /// nothing. The dump is checked first (``TenantDump/validate()``). `conflict` if the tenant
    /// exists, unless `replacing`: then its old records go in the same unit. No server may write
    /// the tenant meanwhile (the file store's caller holds the server lock).
    func importTenant(_ dump: TenantDump, replacing: Bool) async throws(DesklineError)

    /// What the gateway nodes sharing this store share beyond the data (presence, failed logins);
    /// nil for a store that only one node uses.
    var sharedNodeState: (any SharedNodeState)? { get }

    // MARK: Tickets (written only by the server)
    //
    // A write takes a decision (Core's), runs it against the state it finds, and makes the
    // ``Change`` it returns durable as one unit: the ticket's or call's new state, its entry, the
    // inbox lines and the event, numbered in the tenant's event log. Then the event goes to the
    // store's followers (``followCommittedEvents(_:)``), and the write returns the change as
    // committed (the event with its `seq`).
    // A decision that throws refuses the write alone: nothing of it is stored.

    /// Creates a ticket with the tenant's next number: `decide` makes the change from the number
    /// (its `ticket` is the new ticket, which the store also lists in its customer's index).
    func openTicket(in tenant: TenantID, _ decide: @escaping NewTicketDecision) async throws(DesklineError) -> Change
    func ticket(_ id: TicketID, in tenant: TenantID) async throws(DesklineError) -> Ticket?
    /// The numbers of the customer's tickets, from the customer's own index.
    func ticketIDs(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [TicketID]
    /// Every ticket of a tenant (the staff queue).
    func tickets(in tenant: TenantID) async throws(DesklineError) -> [Ticket]
    /// The customer's tickets, read from the customer's own index (not a scan of the tenant).
    func tickets(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [Ticket]
    /// Changes a ticket: `decide` runs on its current state, with no other write of the ticket in
    /// between, and its change is stored (a `ticket` equal to the current one and no entry store
    /// nothing of the ticket). Nil if there is no such ticket.
    ///
    /// `whenQueued` is called (in the calling task) once this write has its place in the store's
    /// order: a write the same caller starts after that is stored after this one. So a caller may
    /// start its next write before this one is durable (pipelining: a session's burst of writes
    /// shares commits, its replies stay in order). The file store orders all of a tenant's writes
    /// in its writer's queue; a database store keeps the order of the writes one node submits for
    /// a tenant (a queue per tenant in front of its connections), which is all the contract asks.
    func changeTicket(_ id: TicketID, in tenant: TenantID, whenQueued: (@Sendable () -> Void)?,
                      _ decide: @escaping TicketDecision) async throws(DesklineError) -> Change?
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
    /// How many of a user's notifications are unread (without reading the notifications).
    func unreadNotificationCount(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Int
    /// A user's inbox (empty if they never got anything).
    func inbox(of user: UserID, in tenant: TenantID) async throws(DesklineError) -> Inbox
    /// Marks notification `id` (or, with nil, all) read; `notFound` for an id never handed out.
    func markNotificationsRead(_ id: Int?, of user: UserID, in tenant: TenantID) async throws(DesklineError)

    // MARK: Call requests

    /// Files a call request with the tenant's next call number: `decide` makes the change from
    /// the number (its `call` is the new request, which the store also lists for its customer).
    func fileCall(in tenant: TenantID, _ decide: @escaping NewCallDecision) async throws(DesklineError) -> Change
    func calls(ofCustomer customer: CustomerID, in tenant: TenantID) async throws(DesklineError) -> [CallRequest]
    /// Every call request of a tenant (the agents' call queue).
    func calls(in tenant: TenantID) async throws(DesklineError) -> [CallRequest]
    /// Changes a call request as ``changeTicket(_:in:whenQueued:_:)`` changes a ticket. Nil if none.
    func changeCall(_ id: CallID, in tenant: TenantID, _ decide: @escaping CallDecision) async throws(DesklineError) -> Change?

    // MARK: Events

    /// The tenant's committed events numbered above `seq`, oldest first, at most `limit`: how a
    /// follower catches up on events it did not receive live.
    func events(in tenant: TenantID, after seq: Int, limit: Int) async throws(DesklineError) -> [TicketEvent]
    /// The number of the tenant's last committed event (0: none yet).
    func lastEventSeq(in tenant: TenantID) async throws(DesklineError) -> Int
    /// Calls `sink` with every tenant's events as they are committed, in batches of one tenant's
    /// consecutive events, each tenant's in `seq` order: everything committed from the call on,
    /// and perhaps the last events committed just before it. `sink` runs on the thread that
    /// committed them (or received them from another node), before the writes' callers are
    /// answered, so it must not block or wait for the store. A backend may miss some (a
    /// database's notifications while it reconnects): ``LiveEventFollower`` reads those from
    /// ``events(in:after:limit:)`` and drops what it already has. Until the subscription is
    /// cancelled.
    func followCommittedEvents(_ sink: @escaping CommittedEventSink) -> EventSubscription
}

extension Store {
    /// ``followCommittedEvents(_:)`` as a stream (for tools and tests that iterate): buffers
    /// what the subscriber has not taken yet; stops when the subscriber stops iterating (its task
    /// is cancelled) or drops the stream.
    public func committedEvents() -> AsyncStream<[TicketEvent]> {
        let (stream, continuation) = AsyncStream<[TicketEvent]>.makeStream()
        let subscription = followCommittedEvents { continuation.yield($0) }
        continuation.onTermination = { _ in subscription.cancel() }
        return stream
    }
}

extension Store {
    /// ``changeTicket(_:in:whenQueued:_:)`` for a caller that does not pipeline.
    public func changeTicket(_ id: TicketID, in tenant: TenantID, _ decide: @escaping TicketDecision) async throws(DesklineError) -> Change? {
        try await changeTicket(id, in: tenant, whenQueued: nil, decide)
    }
}

extension Store {
    /// What the gateway nodes sharing this store share beyond the data; nil (the default) for a
    /// store that only one node uses.
    public var sharedNodeState: (any SharedNodeState)? { nil }

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

/// An entry to append; ``Ticket/append(_:at:)`` numbers it.
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

// MARK: Writes that tell nobody (tools, benchmarks and tests)

extension Store {
    /// Opens a ticket for `customer`, with its `created` event and nobody notified (the ticket
    /// service decides who is told about real ones).
    public func openTicket(customer: CustomerID, subject: String, in tenant: TenantID, at time: Date,
                           by actor: Actor? = nil) async throws(DesklineError) -> Ticket {
        let time = Timestamp.truncate(time)
        let change = try await openTicket(in: tenant) { id in
            let ticket = Ticket.opened(id, in: tenant, by: customer, subject: subject, at: time)
            let actor = actor ?? Actor(id: UserID(unchecked: "u0"), name: "tool", role: .admin)
            return Change(ticket: ticket, event: TicketEvent(kind: .created, tenantId: tenant, ticket: ticket, actor: actor, at: time))
        }
        guard let ticket = change.ticket else { throw .storage("the store returned no ticket") }
        return ticket
    }

    /// Changes a ticket by `update` and appends `draft` (if any) with its `entry` event, nobody
    /// notified. Nil if there is no such ticket.
    public func appendEntry(_ draft: TicketEntryDraft?, to id: TicketID, in tenant: TenantID, at time: Date,
                            _ update: @escaping @Sendable (inout Ticket) throws(DesklineError) -> Void = { _ in }) async throws(DesklineError) -> (Ticket, TicketEntry?)? {
        let time = Timestamp.truncate(time)
        let change = try await changeTicket(id, in: tenant) { state throws(DesklineError) -> Change in
            var ticket = state.ticket
            try update(&ticket)
            guard let draft else { return Change(ticket: ticket) }
            let entry = ticket.append(draft, at: time)
            let actor = Actor(id: draft.authorId, name: draft.authorName, role: draft.authorRole)
            return Change(ticket: ticket, entry: entry,
                          event: TicketEvent(kind: .entry, tenantId: tenant, ticket: ticket, entry: entry, actor: actor, at: time))
        }
        return change.flatMap { change in change.ticket.map { ($0, change.entry) } }
    }
}
