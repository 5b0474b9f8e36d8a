import ArgumentParser
import DesklineCore
import DesklineStore
import Foundation

extension Deskline {
    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load a dump written by deskline export into this config's store (files or PostgreSQL).",
            discussion: """
            Each tenant is loaded as one unit (all of it or nothing), with every id and number as
            it was. A tenant that already exists is refused unless --replace is given; then its
            old records are replaced. On the file store the server must be stopped. On PostgreSQL
            running nodes may stay up for new tenants; stop them to --replace one they serve.
            Afterwards, deskline check verifies the result.
            """)

        @OptionGroup var options: DataOptions
        @Argument(help: "The dump (- for standard input).")
        var file: String
        @Flag(help: "Replace tenants that already exist (their old records go).")
        var replace = false

        func run() async throws {
            let data: Data?
            if file == "-" {
                data = FileHandle.standardInput.readDataToEndOfFile()
            } else {
                data = FileManager.default.contents(atPath: file)
            }
            guard let data else { throw CLIError("cannot read \(file)") }
            // Every tenant is read and checked before anything is written.
            var reader = DumpFile.Reader()
            var dumps: [TenantDump] = []
            for line in data.split(separator: 0x0A, omittingEmptySubsequences: false) {
                if let dump = try reader.take(Data(line)) {
                    try dump.validate()
                    dumps.append(dump)
                }
            }
            try reader.finish()
            let ctx = try await AdminContext.open(options, create: true)
            // The file store: no server may write meanwhile (its lock is held for the import).
            let lock = try await ctx.files?.lockForServer(pid: getpid())
            let recovering = ctx.files?.recoveryNeeded ?? false
            defer { lock?.release(clean: !recovering) }
            if !replace {
                for dump in dumps where try await ctx.store.tenant(dump.tenant.id) != nil {
                    throw CLIError("tenant \(dump.tenant.id) already exists; nothing was imported (--replace replaces it)")
                }
            }
            var lines: [String] = []
            for dump in dumps {
                do {
                    try await ctx.store.importTenant(dump, replacing: replace)
                } catch {
                    // Each tenant is one unit: say which are in, and that this one is not.
                    for line in lines { print(line) }
                    throw CLIError("tenant \(dump.tenant.id) was not imported (\(error))" +
                                   (lines.isEmpty ? "; nothing was imported" : "; the tenants above were"))
                }
                lines.append("imported \(dump.tenant.id): " + Export.counts(dump))
            }
            await ctx.finish(lines.joined(separator: "\n"), changed: false)
        }
    }
}
