@testable import DesklineCore
import Testing

struct PasswordHasherTests {
    let hasher = PasswordHasher(cost: testCost)

    @Test func verifiesTheRightPasswordOnly() throws {
        let hash = try hasher.hash("correct horse battery")
        #expect(hasher.verify("correct horse battery", against: hash))
        #expect(!hasher.verify("correct horse batterY", against: hash))
        #expect(!hasher.verify("", against: hash))
    }

    @Test func storesAlgorithmParametersAndARandomSalt() throws {
        let a = try hasher.hash("same password")
        let b = try hasher.hash("same password")
        #expect(a.algorithm == "scrypt")
        #expect(a.n == 1024 && a.r == 8 && a.p == 1)
        #expect(a.salt != b.salt)
        #expect(a.hash != b.hash)
    }

    @Test func verificationUsesTheStoredCostNotTheCurrentOne() throws {
        let old = try hasher.hash("pw-from-2025")
        let raised = PasswordHasher(cost: PasswordHashingCost(n: 4096, r: 8, p: 1))
        #expect(raised.verify("pw-from-2025", against: old))
    }

    @Test func malformedHashesNeverMatch() throws {
        var hash = try hasher.hash("password1")
        hash.algorithm = "md5"
        #expect(!hasher.verify("password1", against: hash))
        hash = try hasher.hash("password1")
        hash.n = 1000 // not a power of two
        #expect(!hasher.verify("password1", against: hash))
        hash = try hasher.hash("password1")
        hash.hash = "not base64!"
        #expect(!hasher.verify("password1", against: hash))
    }

    @Test func matchesRFC7914TestVector() throws {
        // RFC 7914 §12: scrypt("password", "NaCl", N=1024, r=8, p=16, dkLen=64) starts fdbabe1c9d34...
        // Our hashes are 32 bytes, so check the first 32 bytes through a stored hash.
        let expected: [UInt8] = [0xfd, 0xba, 0xbe, 0x1c, 0x9d, 0x34, 0x72, 0x00, 0x78, 0x56, 0xe7, 0x19, 0x0d, 0x01, 0xe9, 0xfe,
                                 0x7c, 0x6a, 0xd7, 0xcb, 0xc8, 0x23, 0x78, 0x30, 0xe7, 0x73, 0x76, 0x63, 0x4b, 0x37, 0x31, 0x62]
        let stored = PasswordHash(algorithm: "scrypt", n: 1024, r: 8, p: 16,
                                  salt: Data("NaCl".utf8).base64EncodedString(),
                                  hash: Data(expected).base64EncodedString())
        #expect(hasher.verify("password", against: stored))
    }
}

import Foundation
