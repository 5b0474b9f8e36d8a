/// An error a client or operator can be shown. `code` is stable and machine-readable (it goes on
/// the wire after `ERR <COMMAND>`); `message` is for people and may change. Errors whose usual
/// wording points at a command (which a dialect names its own way) carry a ``Reason`` with their
/// data: a dialect words those itself, and `message` says the same without naming a command.
public struct DesklineError: Error, Sendable, Equatable, CustomStringConvertible {
    private enum Kind: String, Sendable {
        case invalidArgument = "INVALID_ARGUMENT"
        case notFound = "NOT_FOUND"
        case conflict = "CONFLICT"
        case loginFailed = "LOGIN_FAILED"
        case busy = "BUSY"
        case storage = "STORAGE_ERROR"
        case forbidden = "FORBIDDEN"
        case noSuchTicket = "NO_SUCH_TICKET"
        case ticketClosed = "TICKET_CLOSED"
        case noPhone = "NO_PHONE"
        case wrongPassword = "WRONG_PASSWORD"
        case throttled = "THROTTLED"
    }

    /// What an error that a dialect words itself is about.
    public enum Reason: Sendable, Equatable {
        /// ``noSuchTicket(_:)``
        case noSuchTicket(TicketID)
        /// ``ticketClosed(_:)``
        case ticketClosed(TicketID)
        /// ``noPhone``
        case noPhone
        /// ``customerHasNoLogin(_:)``
        case customerHasNoLogin(CustomerID)
        /// ``callNotAccepted(_:)``
        case callNotAccepted(CallID)
    }

    private let kind: Kind
    /// Human-readable explanation, naming no command.
    public let message: String
    /// Set for the errors a dialect words itself.
    public let reason: Reason?

    private init(_ kind: Kind, _ message: String, _ reason: Reason? = nil) {
        self.kind = kind
        self.message = message
        self.reason = reason
    }

    /// The stable machine code.
    public var code: String { kind.rawValue }
    public var description: String { "\(code): \(message)" }

    /// A parameter has the wrong shape or value.
    public static func invalidArgument(_ message: String) -> Self { .init(.invalidArgument, message) }
    /// The thing does not exist, or the caller may not know that it exists (same answer).
    public static func notFound(_ message: String) -> Self { .init(.notFound, message) }
    /// The change would break uniqueness or an existing link.
    public static func conflict(_ message: String) -> Self { .init(.conflict, message) }
    /// Unknown email or wrong password: always this exact error, so neither can be told apart.
    public static let loginFailed = DesklineError(
        .loginFailed,
        "Invalid email or password. Log in as <tenant>/<email> if your email is registered with several helpdesks or your login was given to you in that form.")
    /// Too much work already queued (password checks); the client should retry shortly.
    public static func busy(_ message: String) -> Self { .init(.busy, message) }
    /// The store could not read or write; nothing was changed or acknowledged.
    public static func storage(_ message: String) -> Self { .init(.storage, message) }
    /// The caller's role does not allow this.
    public static func forbidden(_ message: String) -> Self { .init(.forbidden, message) }
    /// The ticket does not exist or is not the caller's: one answer for both, so it reveals nothing.
    public static func noSuchTicket(_ id: TicketID) -> Self {
        .init(.noSuchTicket, "No ticket \(id) that you can see.", .noSuchTicket(id))
    }
    /// Nobody writes in a closed ticket.
    public static func ticketClosed(_ id: TicketID) -> Self {
        .init(.ticketClosed, "Ticket \(id) is closed.", .ticketClosed(id))
    }
    /// A call needs a phone number on record.
    public static let noPhone = DesklineError(.noPhone, "There is no phone number on your record.", .noPhone)
    /// An admin asked for something of a customer's login (a password reset) that the customer
    /// does not have yet.
    public static func customerHasNoLogin(_ id: CustomerID) -> Self {
        .init(.notFound, "Customer \(id) has no login yet.", .customerHasNoLogin(id))
    }
    /// A call must be accepted before it is marked done.
    public static func callNotAccepted(_ id: CallID) -> Self {
        .init(.conflict, "Call \(id) has not been accepted yet.", .callNotAccepted(id))
    }
    /// Too many failed logins (or password changes: `failed` says which) from this address or
    /// for this account; says when to retry and nothing about whether the account exists.
    public static func throttled(retryAfterSeconds seconds: Int, failed: String = "logins") -> Self {
        .init(.throttled, "Too many failed \(failed). Try again in \(seconds) seconds.")
    }
    /// The current password given to change it was wrong.
    public static let wrongPassword = DesklineError(.wrongPassword, "The current password is not correct; nothing was changed.")
}
