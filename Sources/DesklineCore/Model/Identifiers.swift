/// A validated identifier that is safe to use as a single path component: 1–64 characters from
/// `a-z`, `0-9`, `-` and `_`, starting with a letter or digit. So never `..`, `/`, NUL or empty.
public protocol SafeIdentifier: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible
where RawValue == String {
    init(unchecked rawValue: String)
    static var kindName: String { get }
}

extension SafeIdentifier {
    public init?(rawValue: String) {
        guard Self.isValid(rawValue) else { return nil }
        self.init(unchecked: rawValue)
    }

    /// Validates, throwing an error that names the kind of identifier.
    public init(validating raw: String) throws(DesklineError) {
        guard let id = Self(rawValue: raw) else {
            throw .invalidArgument("'\(raw.prefix(70))' is not a valid \(Self.kindName) id (1-64 of a-z 0-9 - _, starting with a letter or digit)")
        }
        self = id
    }

    public static func isValid(_ raw: String) -> Bool {
        let bytes = Array(raw.utf8)
        guard (1...64).contains(bytes.count) else { return false }
        func allowed(_ b: UInt8, first: Bool) -> Bool {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
            case UInt8(ascii: "-"), UInt8(ascii: "_"): !first
            default: false
            }
        }
        return bytes.enumerated().allSatisfy { allowed($0.element, first: $0.offset == 0) }
    }

    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        guard Self.isValid(raw) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "invalid \(Self.kindName) id '\(raw)'"))
        }
        self.init(unchecked: raw)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// A tenant (company) id, e.g. `acme`. Chosen by the operator.
public struct TenantID: SafeIdentifier {
    public let rawValue: String
    public init(unchecked rawValue: String) { self.rawValue = rawValue }
    public static let kindName = "tenant"
}

/// A user (login) id within a tenant, e.g. `u3`. Allocated by the store.
public struct UserID: SafeIdentifier {
    public let rawValue: String
    public init(unchecked rawValue: String) { self.rawValue = rawValue }
    public static let kindName = "user"
}

/// A customer record id within a tenant, e.g. `c7`. Allocated by the store.
public struct CustomerID: SafeIdentifier {
    public let rawValue: String
    public init(unchecked rawValue: String) { self.rawValue = rawValue }
    public static let kindName = "customer"
}
