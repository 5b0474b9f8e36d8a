import DesklineCore

/// The wording of the native dialect (docs/PROTOCOL.md): what Core leaves to a dialect, with the
/// native commands named where they help.
enum NativeDialect {
    /// The text after `ERR <COMMAND> <CODE> :`.
    static func text(of error: DesklineError) -> String {
        switch error.reason {
        case .noSuchTicket(let id)?: "No ticket \(id) that you can see. TICKETS lists yours."
        case .ticketClosed(let id)?: "Ticket \(id) is closed. Open a new one with NEW <subject>."
        case .noPhone?: "There is no phone number on your record. Add one with PROFILE phone <number>, then CALL again."
        case .customerHasNoLogin(let id)?: "Customer \(id) has no login yet: CUSTOMER LOGIN \(id)."
        case .callNotAccepted(let id)?: "Accept call \(id) first: CALL ACCEPT \(id)."
        case nil: error.message
        }
    }
}
