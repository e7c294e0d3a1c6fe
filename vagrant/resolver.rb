# vagrant/resolver.rb: sends the gateway VM's DNS zones to it from the host.
#
# Required by the Vagrantfile, whose trigger after `vagrant up` / `vagrant
# provision` calls Gatehouse::Resolver.setup_host. Plain Ruby (YAML stdlib
# only, no Vagrant) so tests/laptop.rs can run it directly.
#
# The zone names are read from the same vagrant/gatehouse.yaml that is
# installed in the VM, never typed twice:
# - macOS: /etc/resolver/ZONE per zone (resolver(5)), the same content as
#   `gatehouse resolver --os macos`. Existing files are compared first;
#   sudo is asked for only when a file is missing or different. Files this
#   helper wrote for zones that are no longer in the YAML are removed (only
#   those it wrote, and only while they still hold what it wrote).
# - Linux with systemd-resolved: one drop-in,
#   /etc/systemd/resolved.conf.d/gatehouse.conf (`DNS=` the gateway,
#   `Domains=~ZONE …`), the same content as `gatehouse resolver --os
#   linux`; the same rules as on macOS: sudo (and a restart of
#   systemd-resolved) only when it is missing or different, removed when the
#   YAML has no zones left. Without systemd-resolved: prints what to do.
# - Windows: prints the NRPT rules for PowerShell.

require "json"
require "rbconfig"
require "tempfile"
require "yaml"

module Gatehouse
  module Resolver
    module_function

    RESOLVER_DIR = "/etc/resolver".freeze
    RESOLVED_DIR = "/etc/systemd/resolved.conf.d".freeze

    # The YAML config as plain Ruby data.
    def load(path)
      YAML.safe_load(File.read(path), filename: path) || {}
    end

    # The zone names under `dns.zones`, in file order.
    def zones(config)
      dns = config["dns"] || {}
      (dns["zones"] || {}).keys.map(&:to_s)
    end

    # The port gatehouse's DNS answers `ip` on, from `dns.listen`
    # ("IP:PORT", "[IPv6]:PORT", or a wildcard address). Raises when no
    # listener covers `ip`: the VM's address and the YAML disagree.
    def port(config, ip)
      listen = Array((config["dns"] || {})["listen"])
      listen.each do |entry|
        host, port = entry.to_s.match(/\A\[?(.*?)\]?:(\d+)\z/)&.captures
        next unless host
        return Integer(port) if [ip, "0.0.0.0", "::"].include?(host)
      end
      raise ArgumentError,
            "dns.listen #{listen.inspect} has no address for #{ip}: " \
            "the gateway's IP and vagrant/gatehouse.yaml disagree"
    end

    # { "/etc/resolver/ZONE" => "nameserver IP\n[port N\n]" } for every zone.
    def macos_files(config, ip, dir: RESOLVER_DIR)
      dns_port = port(config, ip)
      body = "nameserver #{ip}\n"
      body += "port #{dns_port}\n" if dns_port != 53
      zones(config).to_h { |zone| [File.join(dir, zone), body] }
    end

    # { "DIR/gatehouse.conf" => "[Resolve]\nDNS=…\nDomains=~ZONE …\n" }: the
    # systemd-resolved drop-in (none when there are no zones).
    def resolved_files(config, ip, dir: RESOLVED_DIR)
      return {} if zones(config).empty?

      dns_port = port(config, ip)
      server = dns_port == 53 ? ip : "#{ip.include?(':') ? "[#{ip}]" : ip}:#{dns_port}"
      domains = zones(config).map { |z| "~#{z}" }.join(" ")
      { File.join(dir, "gatehouse.conf") => "[Resolve]\nDNS=#{server}\nDomains=#{domains}\n" }
    end

    # The files of `files` that are missing or hold something else.
    def stale(files)
      files.reject { |path, body| File.file?(path) && File.read(path) == body }
    end

    # The resolvectl commands for systemd-resolved on a Linux host; `link`
    # is the interface that reaches the gateway.
    def linux_commands(config, ip, link: "LINK")
      dns_port = port(config, ip)
      server = dns_port == 53 ? ip : "#{ip.include?(':') ? "[#{ip}]" : ip}:#{dns_port}"
      domains = zones(config).map { |z| "'~#{z}'" }.join(" ")
      ["sudo resolvectl dns #{link} #{server}", "sudo resolvectl domain #{link} #{domains}"]
    end

    # The NRPT rules for a Windows host (PowerShell as Administrator).
    def windows_commands(config, ip)
      zones(config).map do |zone|
        %(Add-DnsClientNrptRule -Namespace ".#{zone}" -NameServers "#{ip}")
      end
    end

    # :macos, :linux, :windows or :other, from Ruby's host_os.
    def host_os(host_os = RbConfig::CONFIG["host_os"])
      case host_os
      when /darwin/ then :macos
      when /linux/ then :linux
      when /mswin|mingw|cygwin/ then :windows
      else :other
      end
    end

    # The interface the host reaches `ip` on directly (e.g. vboxnet0), if
    # `ip route` can tell; nil when the route goes through a router.
    def link_to(ip)
      out = IO.popen(["ip", "-o", "route", "get", ip], err: File::NULL, &:read)
      out[/\bvia\b/] ? nil : out[/\bdev (\S+)/, 1]
    rescue SystemCallError
      nil
    end

    # Set up (macOS) or explain (Linux, Windows) name resolution for the
    # zones of `yaml_path` on this host. `say` prints a line; `state` is the
    # file that remembers what was written here (kept in .vagrant/). `os`,
    # `dir` and `run` (runs a command as root) are for tests.
    # `resolved` says whether systemd-resolved runs here.
    def setup_host(yaml_path, ip, say:, state:, os: host_os, dir: nil, run: method(:sudo),
                   resolved: File.directory?("/run/systemd/resolve"))
      config = load(yaml_path)
      case os
      when :macos
        install(macos_files(config, ip, dir: dir || RESOLVER_DIR), say: say, state: state, run: run,
                                                                  reload: %w[killall -HUP mDNSResponder])
      when :linux
        if resolved
          install(resolved_files(config, ip, dir: dir || RESOLVED_DIR), say: say, state: state, run: run,
                                                                       reload: %w[systemctl restart systemd-resolved])
          return
        end
        link = link_to(ip) || "LINK"
        say.call("gatehouse: to resolve #{zones(config).map { |z| ".#{z}" }.join(', ')} " \
                 "through #{ip} with systemd-resolved, run (again after the link goes down):")
        linux_commands(config, ip, link: link).each { |line| say.call("  #{line}") }
        say.call("  (LINK: the host-only interface that reaches #{ip}, e.g. vboxnet0)") if link == "LINK"
      when :windows
        say.call("gatehouse: to resolve the zones through #{ip}, in PowerShell as Administrator:")
        windows_commands(config, ip).each { |line| say.call("  #{line}") }
      else
        say.call("gatehouse: point #{zones(config).join(', ')} at #{ip} in this host's resolver")
      end
    end

    # Write the missing or wrong `files`, remove the ones written here that
    # are no longer wanted, then `reload` the resolver; `run` (sudo) only
    # when something is to be done.
    def install(files, say:, state:, run:, reload:)
      written = File.file?(state) ? JSON.parse(File.read(state)) : {}
      gone = written.reject { |path, _| files.key?(path) }
                    .select { |path, body| File.file?(path) && File.read(path) == body }
      todo = stale(files)
      if todo.empty? && gone.empty?
        say.call("gatehouse: #{files.empty? ? 'no zones, nothing' : files.keys.join(', ')} up to date")
      else
        say.call("gatehouse: sudo is needed to write #{todo.keys.join(', ')}") unless todo.empty?
        say.call("gatehouse: sudo is needed to remove #{gone.keys.join(', ')}") unless gone.empty?
        todo.keys.map { |path| File.dirname(path) }.uniq.each { |dir| run.call(["mkdir", "-p", dir]) }
        todo.each do |path, body|
          Tempfile.create("gatehouse-resolver") do |tmp|
            tmp.write(body)
            tmp.close
            run.call(["install", "-m", "0644", tmp.path, path])
          end
        end
        gone.each_key { |path| run.call(["rm", "-f", path]) }
        run.call(reload)
        say.call("gatehouse: wrote #{todo.keys.join(', ')}") unless todo.empty?
        say.call("gatehouse: removed #{gone.keys.join(', ')}") unless gone.empty?
      end
      # Ours from now on: exactly the current zones' files.
      File.write(state, JSON.pretty_generate(files))
    end

    # Run `cmd` as root.
    def sudo(cmd)
      system("sudo", *cmd) or raise "gatehouse: `sudo #{cmd.join(' ')}` failed"
    end
  end
end
