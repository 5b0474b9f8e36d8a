import ArgumentParser
import DesklineCore
import DesklineStore
import Foundation

extension Deskline {
    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write tenants (all, or one) as a portable dump that deskline import loads into either backend.",
            discussion: """
            The dump is JSON lines (docs/STORAGE.md, "Moving data"): every record with its id and
            number, inboxes with what is read, and the event log as the store keeps it. It holds
            password hashes: keep it as safe as the data itself (a file named with --output is made
            readable by its owner only; standard output is what the shell makes it). Stop the server
            first (or export a copy) if the dump must hold every last write: a running server's
            writes during the export may or may not be in it.
            """)

        @OptionGroup var options: DataOptions
        @Option(help: "Export only this tenant.")
        var tenant: String?
        @Option(name: .shortAndLong, help: "Write the dump to this file (default: standard output). An existing file is not overwritten.")
        var output: String?

        func run() async throws {
            let ctx = try await AdminContext.open(options)
            // A file store no server runs on is taken over for the export, as a server would:
            // writes an unclean stop left in a journal go into their logs first.
            var lock: FileStore.ServerLock?
            if let files = ctx.files, !(await files.isServerRunning()) {
                do {
                    lock = try await files.lockForServer(pid: getpid())
                } catch {
                    // A read-only copy (a snapshot) is exported as it is.
                    FileHandle.standardError.write(Data("note: cannot take \(files.root) over (\(error)); exporting it as it is\n".utf8))
                }
            }
            defer { lock?.release(clean: !(ctx.files?.recoveryNeeded ?? true)) }
            var ids: [TenantID]
            if let tenant {
                ids = [try TenantID(validating: tenant)]
            } else {
                ids = try await ctx.store.tenants().map(\.id)
            }
            let handle: FileHandle
            // A file is written as `<output>.partial` and linked to its name once complete (so a
            // failed export leaves no file that looks whole, and never overwrites one).
            var partial: String?
            if let output, output != "-" {
                guard !FileManager.default.fileExists(atPath: output) else { throw CLIError("\(output) exists; name a new file") }
                let path = output + ".partial"
                // A new file only (O_EXCL), readable by its owner only: it holds password hashes.
                let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw CLIError("cannot create \(path): \(String(cString: strerror(errno)))") }
                handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
                partial = path
            } else {
                handle = FileHandle.standardOutput
            }
            defer { if let partial { unlink(partial) } }
            var buffer = Data()
            func out(_ data: Data) throws {
                buffer.append(data)
                if buffer.count >= 1 << 20 {
                    try handle.write(contentsOf: buffer)
                    buffer.removeAll(keepingCapacity: true)
                }
            }
            try out(try DumpFile.header(exportedAt: Date()))
            var summary: [String] = []
            for id in ids {
                guard let dump = try await TenantDump.read(id, from: ctx.store) else { throw DesklineError.notFound("no tenant \(id)") }
                try DumpFile.write(dump, out)
                summary.append("exported \(id): " + Self.counts(dump))
            }
            try out(try DumpFile.trailer(tenants: ids.count))
            try handle.write(contentsOf: buffer)
            if let partial, let output {
                try handle.synchronize()
                try handle.close()
                guard link(partial, output) == 0 else {
                    throw CLIError(errno == EEXIST ? "\(output) exists; name a new file" : "cannot create \(output): \(String(cString: strerror(errno)))")
                }
            }
            // The summary goes to standard error: standard output may be the dump.
            FileHandle.standardError.write(Data((summary.joined(separator: "\n") + "\n").utf8))
            if lock == nil, let files = ctx.files {
                FileHandle.standardError.write(Data("note: a Deskline server is running on \(files.root); writes made during the export may be missing from it\n".utf8))
            }
            await ctx.finish("", changed: false)
        }

        static func counts(_ dump: TenantDump) -> String {
            [("customers", dump.customers.count), ("users", dump.users.count), ("tickets", dump.tickets.count),
             ("entries", dump.tickets.reduce(0) { $0 + $1.entries.count }), ("calls", dump.calls.count),
             ("notifications", dump.inboxes.reduce(0) { $0 + $1.inbox.items.count }), ("events", dump.events.count)]
                .map { "\($0.1) \($0.0)" }.joined(separator: ", ")
        }
    }
}
