import DesklineProtocol
/// Validation and normalisation of account fields. One place, so the CLI, the protocol and
/// the store agree on what an email or a name is.
public enum InputRules {
    /// Trims and lower-cases an email and checks its shape: one `@`, something on both sides,
    /// no spaces, `/` or control characters, at most 254 bytes. `/` is excluded because
    /// `LOGIN tenant/email` uses it to name the tenant.
    public static func email(_ raw: String) throws(DesklineError) -> String {
        let email = raw.trimmingWhitespace().lowercased()
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard email.utf8.count <= 254, parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty,
              !email.unicodeScalars.contains(where: { $0 == " " || $0 == "/" || $0.properties.generalCategory == .control })
        else { throw .invalidArgument("'\(raw.prefix(80))' is not a valid email address") }
        return email
    }

    /// A person's or company's name: trimmed, 1–100 characters (at most 400 bytes), without
    /// control characters, bidirectional overrides or line separators (which could make a name
    /// look like something else on an agent's screen).
    public static func name(_ raw: String, field: String = "name") throws(DesklineError) -> String {
        let name = raw.trimmingWhitespace()
        guard !name.isEmpty, name.count <= 100, name.utf8.count <= 400,
              !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || isInvisibleFormatting($0) })
        else { throw .invalidArgument("\(field) must be 1-100 characters without control or text-direction characters") }
        return name
    }

    /// See ``InvisibleText/isFormatting(_:)`` (one list for what is stored and what is sent).
    static func isInvisibleFormatting(_ s: Unicode.Scalar) -> Bool {
        InvisibleText.isFormatting(s)
    }

    /// Longest message or note, in characters.
    public static let maximumMessageLength = 4000
    /// Longest ticket subject, in characters.
    public static let maximumSubjectLength = 200

    /// Message text as it may be stored: terminal escape sequences (ESC ... as CSI, OSC and
    /// two-character forms) and control characters other than tab are removed, so nothing stored
    /// can repaint another person's terminal; then trimmed. Must be 1–4000 characters after that.
    public static func messageText(_ raw: String, field: String = "message") throws(DesklineError) -> String {
        let text = stripControls(raw).trimmingWhitespace()
        guard !text.isEmpty else { throw .invalidArgument("the \(field) is empty") }
        // Characters, and bytes too: one character can hold any number of combining marks. (In
        // ASCII without controls, as here, a character is a byte: no walk over the graphemes.)
        let utf8 = text.utf8
        let characters = utf8.allSatisfy({ $0 < 0x80 }) ? utf8.count : text.count
        guard characters <= maximumMessageLength, utf8.count <= 4 * maximumMessageLength else {
            throw .invalidArgument("the \(field) is longer than \(maximumMessageLength) characters")
        }
        return text
    }

    /// Longest message of the day, in characters, and its most lines.
    public static let maximumMOTDLength = 4000
    public static let maximumMOTDLines = 50

    /// A message of the day: lines of text without control characters (tabs become spaces),
    /// trailing spaces and blank lines at either end dropped; 1–50 lines, 1–4000 characters.
    public static func motd(_ raw: String) throws(DesklineError) -> String {
        var lines = raw.split(separator: "\n", omittingEmptySubsequences: false)
            .map { stripControls(String($0)).replacingTabs().trimmingTrailingWhitespace() }
        while lines.first?.isEmpty == true { lines.removeFirst() }
        while lines.last?.isEmpty == true { lines.removeLast() }
        let text = lines.joined(separator: "\n")
        guard !text.isEmpty else { throw .invalidArgument("the message of the day is empty") }
        guard lines.count <= maximumMOTDLines else {
            throw .invalidArgument("the message of the day has more than \(maximumMOTDLines) lines")
        }
        guard text.count <= maximumMOTDLength, text.utf8.count <= 4 * maximumMOTDLength else {
            throw .invalidArgument("the message of the day is longer than \(maximumMOTDLength) characters")
        }
        return text
    }

    /// A ticket subject: like message text, 1–200 characters, tabs turned into spaces.
    public static func subject(_ raw: String) throws(DesklineError) -> String {
        let text = stripControls(raw).replacingTabs().trimmingWhitespace()
        guard !text.isEmpty else { throw .invalidArgument("the subject is empty") }
        guard text.count <= maximumSubjectLength, text.utf8.count <= 4 * maximumSubjectLength else {
            throw .invalidArgument("the subject is longer than \(maximumSubjectLength) characters")
        }
        return text
    }

    /// Removes ANSI/VT escape sequences, C0/C1 control characters except tab, and the invisible
    /// formatting characters of ``isInvisibleFormatting(_:)``.
    static func stripControls(_ raw: String) -> String {
        // Printable ASCII and tabs stay as they are (most text; this scan is a tenth of the walk
        // below, which is a tenth of a busy server's command parsing).
        if raw.utf8.allSatisfy({ (0x20...0x7E).contains($0) || $0 == 0x09 }) { return raw }
        var out = String.UnicodeScalarView()
        var scalars = raw.unicodeScalars.makeIterator()
        while let c = scalars.next() {
            switch c.value {
            case 0x1B: // ESC: skip the whole sequence
                guard let next = scalars.next() else { break }
                switch next {
                case "[": // CSI: parameters and intermediates up to a final byte 0x40-0x7E
                    while let b = scalars.next(), !(0x40...0x7E).contains(b.value) {}
                case "]", "P", "X", "^", "_": // OSC/DCS/SOS/PM/APC: up to BEL, ESC \ or C1 ST
                    while let b = scalars.next() {
                        if b.value == 0x07 || b.value == 0x9C { break }
                        if b.value == 0x1B { _ = scalars.next(); break }
                    }
                default: // two-character sequence
                    break
                }
            case 0x9B: // C1 CSI
                while let b = scalars.next(), !(0x40...0x7E).contains(b.value) {}
            case 0x9D, 0x90, 0x98, 0x9E, 0x9F: // C1 OSC/DCS/SOS/PM/APC: up to BEL or ST
                while let b = scalars.next() {
                    if b.value == 0x07 || b.value == 0x9C { break }
                    if b.value == 0x1B { _ = scalars.next(); break }
                }
            case 0x09:
                out.append(c)
            case 0x00..<0x20, 0x7F...0x9F:
                continue
            case _ where isInvisibleFormatting(c):
                continue
            default:
                out.append(c)
            }
        }
        return String(out)
    }

    /// A phone number: digits, spaces and `+ - ( ) .`, with 7–15 digits (E.164's maximum), so
    /// short service numbers (`999`, `112`) cannot be handed to agents to dial.
    public static func phone(_ raw: String) throws(DesklineError) -> String {
        let phone = raw.trimmingWhitespace()
        let allowed = Set("0123456789 +-().")
        guard phone.count <= 32, phone.allSatisfy(allowed.contains),
              (7...15).contains(phone.filter(\.isNumber).count)
        else { throw .invalidArgument("'\(raw.prefix(40))' is not a valid phone number (7-15 digits; spaces and + - ( ) . allowed)") }
        return phone
    }

    /// A new password: 8–256 bytes of UTF-8, no control characters (they cannot be typed reliably
    /// into a terminal and would not survive the line protocol), and no space at either end
    /// (invisible when pasted, and dropped by `LOGIN` without the `:`).
    public static func newPassword(_ raw: String) throws(DesklineError) -> String {
        guard (8...256).contains(raw.utf8.count) else {
            throw .invalidArgument("passwords must be 8-256 bytes long")
        }
        guard raw.first?.isWhitespace == false, raw.last?.isWhitespace == false else {
            throw .invalidArgument("passwords may not start or end with a space")
        }
        guard !raw.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw .invalidArgument("passwords may not contain control characters")
        }
        return raw
    }
}

extension String {
    func replacingTabs() -> String { String(map { $0 == "\t" ? " " : $0 }) }

    func trimmingTrailingWhitespace() -> String {
        var s = Substring(self)
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }

    func trimmingWhitespace() -> String {
        // Most text starts and ends with a printable ASCII character. Then there is nothing to
        // trim: `isWhitespace` looks at a character's first scalar, and the characters at both
        // ends start with that ASCII scalar (at the end, perhaps with a Prepend scalar before
        // it, and none of those is whitespace). So no character needs to be looked at (that
        // was 0.4% of a busy server's time).
        if let first = utf8.first, let last = utf8.last, (0x21...0x7E).contains(first), (0x21...0x7E).contains(last) { return self }
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
