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

    /// A person's or company's name: trimmed, 1–100 characters, no control characters.
    public static func name(_ raw: String, field: String = "name") throws(DesklineError) -> String {
        let name = raw.trimmingWhitespace()
        guard !name.isEmpty, name.count <= 100,
              !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else { throw .invalidArgument("\(field) must be 1-100 characters without control characters") }
        return name
    }

    /// A phone number: digits, spaces and `+ - ( ) .`, 3–32 characters, at least 3 digits.
    public static func phone(_ raw: String) throws(DesklineError) -> String {
        let phone = raw.trimmingWhitespace()
        let allowed = Set("0123456789 +-().")
        guard (3...32).contains(phone.count), phone.allSatisfy(allowed.contains),
              phone.filter(\.isNumber).count >= 3
        else { throw .invalidArgument("'\(raw.prefix(40))' is not a valid phone number (digits, spaces and + - ( ) .)") }
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
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
