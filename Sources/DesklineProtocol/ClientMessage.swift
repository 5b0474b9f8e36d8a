/// One line sent by a client, split into IRC atoms (RFC 1459 + IRCv3 message-tags).
///
/// Besides the IRC parameters, the message remembers where each parameter started in the
/// original line, so a command whose last parameter is free text can take "the rest of the line"
/// when a person on netcat leaves out the `:` (see ``rest(from:)``).
public struct ClientMessage: Sendable, Equatable {
    /// Message tags; for duplicate keys the last one wins. Keys without a value map to "".
    public var tags: [String: String]
    /// The optional `:source` prefix. Clients may send one; the server ignores it.
    public var source: String?
    /// The command exactly as sent.
    public var command: String
    /// The parameters, IRC semantics: the last one may be a `:trailing` one.
    public var params: [String]

    private let line: Substring
    private let paramStarts: [String.Index]
    private let lastIsTrailing: Bool
    /// The last parameter is the rest of a line cut at ``maximumParameters``, not a `:trailing`.
    private let lastWasCut: Bool

    /// The command, upper-cased: commands are case-insensitive.
    public var verb: String { command.uppercased() }

    /// The value of the `label` tag, if the client sent one.
    public var label: String? { tags["label"] }

    /// The text from parameter `index` to the end of the line.
    ///
    /// If that parameter was written as `:trailing`, this is exactly that parameter. Otherwise
    /// it is the original text from where the parameter began up to the end of the line, inner
    /// spaces included (`MSG #1 hello  world` keeps both), trailing spaces dropped — as IRC drops
    /// them between parameters, and as a person pasting a password expects. Returns nil if there
    /// is no such parameter.
    public func rest(from index: Int) -> String? {
        guard index >= 0, index < params.count else { return nil }
        if index == params.count - 1 && lastIsTrailing && !lastWasCut { return params[index] }
        // Trim by scalar, not by Character: a space after a prepended mark (U+0600...U+0605)
        // clusters with it, and dropping that Character would drop the mark too.
        var text = line[paramStarts[index]...].unicodeScalars
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }

    /// Builds a message directly (tests, tools); `rest(from:)` then joins parameters with spaces.
    public init(tags: [String: String] = [:], source: String? = nil, command: String, params: [String] = []) {
        self.tags = tags
        self.source = source
        self.command = command
        self.params = params
        var text = params.joined(separator: " ")
        var starts: [String.Index] = []
        var offset = 0
        for p in params {
            starts.append(text.index(text.startIndex, offsetBy: offset))
            offset += p.count + 1
        }
        if params.isEmpty { text = "" }
        self.line = Substring(text)
        self.paramStarts = starts
        self.lastIsTrailing = false
        self.lastWasCut = false
    }

    init(tags: [String: String], source: String?, command: String, params: [String],
         line: Substring, paramStarts: [String.Index], lastIsTrailing: Bool, lastWasCut: Bool) {
        self.tags = tags
        self.source = source
        self.command = command
        self.params = params
        self.line = line
        self.paramStarts = paramStarts
        self.lastIsTrailing = lastIsTrailing
        self.lastWasCut = lastWasCut
    }

    public static func == (lhs: ClientMessage, rhs: ClientMessage) -> Bool {
        lhs.tags == rhs.tags && lhs.source == rhs.source && lhs.command == rhs.command && lhs.params == rhs.params
    }
}

/// Why a line could not be parsed. `code` is the stable machine code used on the wire.
public enum ParseError: Error, Equatable, Sendable {
    /// A line with tags and/or a source but no command.
    case missingCommand
    /// The command token contains characters other than letters and digits.
    case invalidCommand(String)

    public var code: String {
        switch self {
        case .missingCommand: "NO_COMMAND"
        case .invalidCommand: "INVALID_COMMAND"
        }
    }

    public var message: String {
        switch self {
        case .missingCommand: "The line has no command. Type HELP for the list of commands."
        case .invalidCommand(let c): "'\(c.prefix(32))' is not a valid command name. Type HELP for the list of commands."
        }
    }
}

extension ClientMessage {
    /// At most this many parameters are split; the last one takes the rest of the line
    /// (RFC 2812 §2.3.1: after 14 middle parameters the trailing colon is optional).
    /// This also bounds the work done on a line made of thousands of spaces and words.
    public static let maximumParameters = 15

    /// Parses one line (without its line ending; a trailing CR or LF is tolerated).
    /// Returns nil for a blank line, which clients may send and the server ignores.
    public static func parse(_ input: String) throws(ParseError) -> ClientMessage? {
        // Scan bytes, as IRC does: a space next to a combining mark is still a separator, and
        // "\r\n" is one Character but two bytes.
        var line = Substring(input)
        while let last = line.utf8.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") {
            line = line[..<line.utf8.index(before: line.endIndex)]
        }
        let bytes = line.utf8
        var i = bytes.startIndex
        let end = bytes.endIndex

        func skipSpaces() { while i < end && bytes[i] == UInt8(ascii: " ") { i = bytes.index(after: i) } }
        func token() -> Substring {
            let start = i
            while i < end && bytes[i] != UInt8(ascii: " ") { i = bytes.index(after: i) }
            return line[start..<i]
        }

        skipSpaces()
        if i == end { return nil }

        var tags: [String: String] = [:]
        if bytes[i] == UInt8(ascii: "@") {
            i = bytes.index(after: i)
            tags = parseTags(token())
            skipSpaces()
        }
        var source: String?
        if i < end && bytes[i] == UInt8(ascii: ":") {
            i = bytes.index(after: i)
            source = String(token())
            skipSpaces()
        }
        let command = token()
        if command.isEmpty { throw .missingCommand }
        // (ASCII letters and digits, by range: the Unicode property lookup was a tenth of parsing.)
        guard command.unicodeScalars.allSatisfy({ ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) }) else {
            throw .invalidCommand(String(command))
        }

        var params: [String] = []
        var starts: [String.Index] = []
        var lastIsTrailing = false
        var lastWasCut = false
        while true {
            skipSpaces()
            if i == end { break }
            if bytes[i] == UInt8(ascii: ":") {
                let start = bytes.index(after: i)
                params.append(String(line[start...]))
                starts.append(start)
                lastIsTrailing = true
                break
            }
            if params.count == maximumParameters - 1 {
                params.append(String(line[i...]))
                starts.append(i)
                lastIsTrailing = true
                lastWasCut = true
                break
            }
            let start = i
            params.append(String(token()))
            starts.append(start)
        }
        return ClientMessage(tags: tags, source: source, command: String(command), params: params,
                             line: line, paramStarts: starts, lastIsTrailing: lastIsTrailing, lastWasCut: lastWasCut)
    }

    /// The `label` tag of a line that could not be parsed as a whole (no command, NUL byte),
    /// so even the error about it can be correlated by a bot.
    public static func label(inUnparsedLine line: String) -> String? {
        guard line.utf8.first == UInt8(ascii: "@") else { return nil }
        let tags = line.unicodeScalars.dropFirst().prefix(while: { $0 != " " })
        guard let label = parseTags(Substring(tags))["label"], !label.isEmpty, label.utf8.count <= 64 else { return nil }
        return label
    }

    /// Splits by scalar, not by Character: `;` or `=` followed by a combining mark still splits.
    static func parseTags(_ raw: Substring) -> [String: String] {
        var tags: [String: String] = [:]
        for item in raw.unicodeScalars.split(separator: ";", omittingEmptySubsequences: true) {
            if let eq = item.firstIndex(of: "=") {
                let key = String(item[..<eq])
                if key.isEmpty { continue }
                tags[key] = TagValue.unescape(Substring(item[item.index(after: eq)...]))
            } else {
                tags[String(item)] = ""
            }
        }
        return tags
    }
}

/// IRCv3 message-tag value escaping.
public enum TagValue {
    /// Undoes `\:` `\s` `\\` `\r` `\n`; a backslash before any other character is dropped, and
    /// so is a lone trailing backslash.
    public static func unescape(_ value: Substring) -> String {
        var out = String.UnicodeScalarView()
        var iterator = value.unicodeScalars.makeIterator()
        while let c = iterator.next() {
            guard c == "\\" else { out.append(c); continue }
            guard let next = iterator.next() else { break }
            switch next {
            case ":": out.append(";")
            case "s": out.append(" ")
            case "\\": out.append("\\")
            case "r": out.append("\r")
            case "n": out.append("\n")
            default: out.append(next)
            }
        }
        return String(out)
    }

    /// Escapes a value so it survives inside a tag. Works on Unicode scalars, not Characters: a
    /// space followed by a combining mark is one Character but must still become `\s`.
    public static func escape(_ value: String) -> String {
        // Most values have nothing to escape: one pass over the bytes, no new string. (The
        // escaped characters are all ASCII, so no byte of a multi-byte scalar matches.)
        guard value.utf8.contains(where: { $0 == UInt8(ascii: ";") || $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\\")
            || $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") }) else { return value }
        var out = String.UnicodeScalarView()
        for c in value.unicodeScalars {
            switch c {
            case ";": out.append(contentsOf: "\\:".unicodeScalars)
            case " ": out.append(contentsOf: "\\s".unicodeScalars)
            case "\\": out.append(contentsOf: "\\\\".unicodeScalars)
            case "\r": out.append(contentsOf: "\\r".unicodeScalars)
            case "\n": out.append(contentsOf: "\\n".unicodeScalars)
            default: out.append(c)
            }
        }
        return String(out)
    }
}
