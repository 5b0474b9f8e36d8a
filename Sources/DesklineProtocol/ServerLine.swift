/// One line the server sends. The first token says what it is:
///
/// - `OK` — the final line of a successful reply to the client's command.
/// - `ERR` — the final line of a failed reply: `ERR <COMMAND> <CODE> :<text>`.
/// - `RPL` — a data line of a reply that continues; an `OK` or `ERR` always follows.
/// - `EVENT` — something the server pushes on its own (greeting, keepalive, shutdown, ...).
///
/// Reply lines carry the client's `@label=...` when the command had one.
public struct ServerLine: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case ok = "OK"
        case err = "ERR"
        case rpl = "RPL"
        case event = "EVENT"
    }

    public var label: String?
    public var kind: Kind
    /// The command being answered (upper case), `*` when there is none, or the event type.
    public var command: String
    /// Single-word parameters; spaces in them are escaped (see ``word(_:)``). Free text belongs
    /// in ``text``.
    public var params: [String]
    /// Free text, always written last after a `:`.
    public var text: String?

    public init(label: String? = nil, _ kind: Kind, _ command: String, _ params: [String] = [], text: String? = nil) {
        self.label = label
        self.kind = kind
        self.command = command
        self.params = params
        self.text = text
    }

    /// An error reply: `ERR <COMMAND> <CODE> :<text>`.
    public static func error(label: String? = nil, command: String, code: String, text: String) -> ServerLine {
        ServerLine(label: label, .err, command, [code], text: text)
    }

    /// Whether a bot waiting for the reply to a command can stop reading after this line.
    public var isTerminal: Bool { kind == .ok || kind == .err }

    /// The wire form, without the line ending.
    ///
    /// CR, LF and NUL become spaces and every other control character but tab (C0, DEL, C1, so
    /// also ESC of terminal escape sequences) becomes `?`, as does an invisible text-direction or
    /// line-separator character (``InvisibleText``), so nothing echoed back can break the line,
    /// repaint a terminal or turn the rest of a line around. A middle parameter that is empty,
    /// starts with `:` or contains a space would change the meaning of the line, so it is made
    /// safe here too.
    public func serialized() -> String {
        var out = ""
        if let label {
            out += "@label="
            out += TagValue.escape(Self.clean(label))
            out += " "
        }
        out += kind.rawValue
        out += " "
        out += Self.word(command)
        for p in params {
            out += " "
            out += Self.word(p)
        }
        if let text {
            out += " :"
            out += Self.clean(text)
        }
        return out
    }

    /// `s` without control characters: CR, LF and NUL become spaces, every other C0 (but tab),
    /// DEL or C1 character and every invisible formatting character becomes `?`. Safe to show on
    /// a terminal and to write into a log line.
    public static func clean(_ s: String) -> String {
        // Printable ASCII (the common case) has nothing to clean: one pass over the bytes.
        if s.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return s }
        guard s.unicodeScalars.contains(where: isControl) else { return s }
        return String(String.UnicodeScalarView(s.unicodeScalars.map { scalar -> Unicode.Scalar in
            guard isControl(scalar) else { return scalar }
            return scalar == "\r" || scalar == "\n" || scalar == "\0" ? " " : "?"
        }))
    }

    /// Tab passes: it moves a cursor but repaints nothing, and message text may contain it.
    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        (scalar.value < 0x20 && scalar != "\t") || (0x7F...0x9F).contains(scalar.value)
            || (scalar.value >= 0x61C && InvisibleText.isFormatting(scalar))
    }

    /// A word is escaped like an IRCv3 tag value (`\s` for a space, `\\` for a backslash,
    /// `\:` for `;`), so a name with spaces stays one word and a bot gets it back exactly with
    /// the same unescaping it uses for tags. An empty word is `*`; a leading `:` becomes `_`.
    static func word(_ s: String) -> String {
        if s.isEmpty { return "*" }
        let w = TagValue.escape(clean(s))
        // Scalars, not Characters: ":" followed by a combining mark is one Character.
        if w.unicodeScalars.first == ":" { return "_" + String(w.unicodeScalars.dropFirst()) }
        return w
    }
}
