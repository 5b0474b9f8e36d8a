import DesklineProtocol
import Foundation
import Testing

/// The ircdocs parser-tests `msg-split` suite (CC0), converted to JSON by Scripts/update-parser-vectors.
struct MessageSplitVectorTests {
    struct Vector: Decodable, CustomTestStringConvertible, Sendable {
        struct Atoms: Decodable, Sendable {
            var tags: [String: String?]?
            var source: String?
            var verb: String
            var params: [String]?
        }
        var input: String
        var atoms: Atoms
        var testDescription: String { input }
    }

    struct File: Decodable {
        var tests: [Vector]
    }

    static let vectors: [Vector] = {
        let url = Bundle.module.url(forResource: "msg-split", withExtension: "json", subdirectory: "Fixtures")!
        return try! JSONDecoder().decode(File.self, from: Data(contentsOf: url)).tests
    }()

    @Test func suiteIsComplete() {
        #expect(Self.vectors.count == 35)
    }

    @Test(arguments: vectors)
    func parsesVector(_ vector: Vector) throws {
        let message = try #require(try ClientMessage.parse(vector.input))
        #expect(message.command == vector.atoms.verb)
        #expect(message.source == vector.atoms.source)
        #expect(message.params == (vector.atoms.params ?? []))
        let expectedTags = (vector.atoms.tags ?? [:]).mapValues { $0 ?? "" }
        #expect(message.tags == expectedTags)
    }
}
