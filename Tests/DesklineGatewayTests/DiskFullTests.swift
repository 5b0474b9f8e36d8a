import DesklineCore
import Foundation
import Testing

/// Whether this machine lets the tests mount a tmpfs (root in a namespace that allows it).
let canMountTmpfs: Bool = {
    let probe = NSTemporaryDirectory() + "deskline-mount-probe-" + UUID().uuidString
    defer { try? FileManager.default.removeItem(atPath: probe) }
    guard (try? FileManager.default.createDirectory(atPath: probe, withIntermediateDirectories: true)) != nil,
          DiskFullTests.run("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", probe]) == 0 else { return false }
    return DiskFullTests.run("/bin/umount", [probe]) == 0
}()

/// A real full disk: a 2 MiB tmpfs mounted for the test (needs root; skipped otherwise).
@Suite(.enabled(if: canMountTmpfs, "needs root to mount a small tmpfs"))
struct DiskFullTests {
    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Runs `body` with a tmpfs of `size` (`2m`) mounted at a fresh directory, then unmounts it:
    /// lazily, since the store's thread pools may still hold a file there (a plain `umount` then
    /// fails, and the mount, full, stayed behind after every run).
    static func withTmpfs(size: String, _ body: (String) async throws -> Void) async throws {
        let mount = NSTemporaryDirectory() + "deskline-full-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        try #require(run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", mount]) == 0)
        defer {
            run("/bin/umount", ["--lazy", mount])
            try? FileManager.default.removeItem(atPath: mount)
        }
        try await body(mount)
    }

    /// Fills the file system at `mount` with a file (its path is returned; remove it to free the
    /// space), then frees `leavingFreePages` 4 KiB pages of it.
    static func fill(_ mount: String, leavingFreePages pages: Int = 0) throws -> String {
        let filler = mount + "/filler"
        #expect(FileManager.default.createFile(atPath: filler, contents: nil))
        let handle = try #require(FileHandle(forWritingAtPath: filler))
        defer { try? handle.close() }
        let chunk = Data(repeating: 0x41, count: 4096)
        while (try? handle.write(contentsOf: chunk)) != nil {}
        if pages > 0 { try handle.truncate(atOffset: try handle.offset() - UInt64(4096 * pages)) }
        return filler
    }

    @Test func fullDiskRefusesWritesKeepsReadsAndRecovers() async throws {
        try await Self.withTmpfs(size: "2m") { mount in try await fillTheDiskUnderAServer(mount) }
    }

    func fillTheDiskUnderAServer(_ mount: String) async throws {
        let server = try await TestServer.start(root: mount + "/data")
        let ann = try await server.login("ann@acme.test")
        _ = try await ann.command("NEW Before the disk fills")
        #expect(try await ann.command("MSG #1001 stored").first?.hasPrefix("OK MSG #1001 1") == true)

        // Fill the disk to the last byte.
        let filler = try Self.fill(mount)

        // Writes fail now. (A log's last, partly filled page may still take a line or two: those
        // are durable and acknowledged, and must stay.)
        var acknowledged = ["stored"]
        var refused = false
        for i in 1...200 where !refused {
            let reply = try #require(try await ann.command("MSG #1001 while full \(i)").last)
            if reply.hasPrefix("OK MSG") {
                acknowledged.append("while full \(i)")
            } else {
                #expect(reply == "ERR MSG STORAGE_ERROR :the store could not complete the operation; nothing was changed")
                refused = true
            }
        }
        #expect(refused)
        #expect(try await ann.command("NEW Another").last?.hasPrefix("ERR NEW STORAGE_ERROR") == true)
        // Reads still work, and show exactly what was acknowledged.
        func texts() async throws -> [String] {
            try await ann.command("HISTORY #1001").dropLast().map { String($0.split(separator: ":").last!) }
        }
        #expect(try await texts() == acknowledged)
        #expect(try await ann.command("TICKETS").count == 2)

        // Space returns: writing works again, and the store is consistent.
        try FileManager.default.removeItem(atPath: filler)
        #expect(try await ann.command("MSG #1001 after the disk was freed").first?.hasPrefix("OK MSG #1001 \(acknowledged.count + 1)") == true)
        #expect(try await texts() == acknowledged + ["after the disk was freed"])
        #expect(try await server.store.check(repair: false).problems == [])
        await ann.close()
        try await server.stopKeepingData()
    }
}

extension DiskFullTests {
    /// Issue #16: `customer add` (and `user add`) on a disk with one free page. Before account
    /// changes were all or nothing, the customer's file and the counter were written and only its
    /// email index failed; the same command once space returned made a second customer with
    /// the email, and `check --repair` could not resolve that.
    @Test func accountChangesOnAFullDiskChangeNothing() async throws {
        try await Self.withTmpfs(size: "1m") { mount in try await fillTheDiskUnderTheAdminCLI(mount) }
    }

    func fillTheDiskUnderTheAdminCLI(_ mount: String) async throws {
        let data = mount + "/data"
        func deskline(_ args: [String], stdin: String? = nil) async throws -> CLIProcess.Result {
            try await CLIProcess.run(args + ["--data", data], stdin: stdin)
        }
        func files() -> [String: Data] {
            var result: [String: Data] = [:]
            for path in (FileManager.default.enumerator(atPath: data)?.allObjects as? [String]) ?? [] where !path.hasSuffix(".lock") {
                result[path] = FileManager.default.contents(atPath: data + "/" + path) ?? Data()
            }
            return result
        }
        #expect(try await deskline(["tenant", "add", "t", "--name", "T"]).status == 0)
        #expect(try await deskline(["customer", "add", "--tenant", "t", "--name", "Cy", "--email", "cy@t.test"]).status == 0)

        let filler = try Self.fill(mount, leavingFreePages: 1)

        let before = files()
        let refused = try await deskline(["customer", "add", "--tenant", "t", "--name", "Ann", "--email", "ann@t.test"])
        #expect(refused.status == 1)
        #expect(refused.stderr.hasSuffix("\nError: STORAGE_ERROR: the store could not complete the operation; nothing was changed\n"), "\(refused.stderr)")
        #expect(files() == before)
        let login = try await deskline(["user", "add", "--tenant", "t", "--role", "customer", "--customer", "c1", "--email", "cy@t.test"],
                                       stdin: "a good password\n")
        #expect(login.status == 1)
        #expect(login.stderr.hasSuffix("\nError: STORAGE_ERROR: the store could not complete the operation; nothing was changed\n"), "\(login.stderr)")
        #expect(files() == before)

        // Space returns: the same commands work once, and the store is consistent.
        try FileManager.default.removeItem(atPath: filler)
        let created = try await deskline(["customer", "add", "--tenant", "t", "--name", "Ann", "--email", "ann@t.test"])
        #expect(created.stdout.hasPrefix("created customer c2 (Ann <ann@t.test>) in tenant t"), "\(created.stdout) \(created.stderr)")
        let again = try await deskline(["customer", "add", "--tenant", "t", "--name", "Ann", "--email", "ann@t.test"])
        #expect(again.stderr == "Error: CONFLICT: tenant t already has a customer with email ann@t.test (c2)\n", "\(again.stderr)")
        let linked = try await deskline(["user", "add", "--tenant", "t", "--role", "customer", "--customer", "c1", "--email", "cy@t.test"],
                                        stdin: "a good password\n")
        #expect(linked.stdout.hasPrefix("created customer login cy@t.test (user u1) in tenant t"), "\(linked.stdout) \(linked.stderr)")
        let check = try await deskline(["check"])
        #expect(check.status == 0 && check.stdout.hasSuffix("clean\n"), "\(check.stdout)")
    }
}
