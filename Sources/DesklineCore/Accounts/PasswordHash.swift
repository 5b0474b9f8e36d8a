import Crypto
import _CryptoExtras
import struct Foundation.Data

/// A stored password hash. Algorithm and parameters are stored with it, so the cost can be raised
/// later: verification always uses the parameters the hash was made with.
public struct PasswordHash: Sendable, Codable, Equatable {
    /// Only scrypt (RFC 7914) today; the field exists so another KDF can be added without migration.
    public var algorithm: String
    /// scrypt CPU/memory cost N (a power of two).
    public var n: Int
    /// scrypt block size r.
    public var r: Int
    /// scrypt parallelism p.
    public var p: Int
    /// Base64 of the per-user random salt.
    public var salt: String
    /// Base64 of the derived key.
    public var hash: String

    public init(algorithm: String, n: Int, r: Int, p: Int, salt: String, hash: String) {
        self.algorithm = algorithm
        self.n = n
        self.r = r
        self.p = p
        self.salt = salt
        self.hash = hash
    }
}

/// scrypt cost parameters for new hashes.
public struct PasswordHashingCost: Sendable, Equatable, Codable {
    public var n: Int
    public var r: Int
    public var p: Int

    public init(n: Int, r: Int, p: Int) {
        self.n = n
        self.r = r
        self.p = p
    }

    /// N=2^15, r=8, p=1: ~0.14 s and 32 MiB per derivation on the reference machine
    /// (RFC 7914's interactive-login recommendation).
    public static let standard = PasswordHashingCost(n: 32768, r: 8, p: 1)

    /// Checks the parameters scrypt accepts (N a power of two ≥ 2, r ≥ 1, 1 ≤ p ≤ 16), with
    /// upper bounds that keep a single login from exhausting memory.
    public var isValid: Bool {
        n >= 2 && n <= 1 << 20 && (n & (n - 1)) == 0 && (1...32).contains(r) && (1...16).contains(p)
    }
}

/// Derives and verifies password hashes. The derivation is deliberately slow CPU work: callers
/// must run it off any event loop (see ``AccountService``).
public struct PasswordHasher: Sendable {
    public var cost: PasswordHashingCost
    static let keyLength = 32
    static let saltLength = 16

    public init(cost: PasswordHashingCost = .standard) {
        self.cost = cost
    }

    /// Hashes a new password with a fresh random salt.
    public func hash(_ password: String) throws(DesklineError) -> PasswordHash {
        var salt = [UInt8](repeating: 0, count: Self.saltLength)
        var rng = SystemRandomNumberGenerator()
        for i in salt.indices { salt[i] = rng.next() }
        let key = try Self.derive(password, salt: salt, n: cost.n, r: cost.r, p: cost.p)
        return PasswordHash(algorithm: "scrypt", n: cost.n, r: cost.r, p: cost.p,
                            salt: Data(salt).base64EncodedString(),
                            hash: key.withUnsafeBytes { Data($0).base64EncodedString() })
    }

    /// Whether `password` matches `stored`, compared in constant time. A malformed stored hash
    /// never matches.
    public func verify(_ password: String, against stored: PasswordHash) -> Bool {
        guard stored.algorithm == "scrypt",
              PasswordHashingCost(n: stored.n, r: stored.r, p: stored.p).isValid,
              let salt = Data(base64Encoded: stored.salt),
              let expected = Data(base64Encoded: stored.hash), expected.count == Self.keyLength,
              let derived = try? Self.derive(password, salt: Array(salt), n: stored.n, r: stored.r, p: stored.p)
        else { return false }
        // SymmetricKey's == is swift-crypto's constant-time comparison.
        return derived == SymmetricKey(data: expected)
    }

    /// Spends the same work as a real verification, for unknown accounts, so the reply time does
    /// not tell whether an email exists.
    public func burnVerification() {
        _ = verify("not a password", against: dummy)
    }

    private var dummy: PasswordHash {
        PasswordHash(algorithm: "scrypt", n: cost.n, r: cost.r, p: cost.p,
                     salt: "AAAAAAAAAAAAAAAAAAAAAA==",
                     hash: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    }

    private static func derive(_ password: String, salt: [UInt8], n: Int, r: Int, p: Int) throws(DesklineError) -> SymmetricKey {
        do {
            return try KDF.Scrypt.deriveKey(from: Array(password.utf8), salt: salt, outputByteCount: keyLength,
                                            rounds: n, blockSize: r, parallelism: p)
        } catch {
            throw .invalidArgument("password hashing failed: \(error)")
        }
    }
}
