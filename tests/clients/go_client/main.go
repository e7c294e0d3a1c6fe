// Go's golang.org/x/crypto/ssh through the jump host (what Terraform and
// Packer use for bastions), driven by tests/clients/libraries.rs: key,
// then the code answered through keyboard-interactive; a direct-tcpip
// tunnel to the granted echo server with --data written and read back
// into --out; a tunnel to the port not granted; a second connection with
// --wrong-code. Prints `key: value` lines for the test (the host key it
// saw among them). Loopback only, bounded in time; it decides nothing:
// the test asserts.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

func say(key string, value interface{}) {
	fmt.Printf("%s: %v\n", key, value)
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}

// login dials the jump host with the key, answering the code prompt with
// code.
func login(addr, user string, signer ssh.Signer, code string) (*ssh.Client, error) {
	answer := func(_, _ string, questions []string, _ []bool) ([]string, error) {
		answers := make([]string, len(questions))
		for i, q := range questions {
			say("prompt", strings.TrimSpace(q))
			answers[i] = code
		}
		return answers, nil
	}
	config := &ssh.ClientConfig{
		User: user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer), ssh.KeyboardInteractive(answer)},
		// Shown for the test to compare with the jump host's own.
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			say("host key", ssh.FingerprintSHA256(key))
			return nil
		},
		Timeout: 30 * time.Second,
	}
	return ssh.Dial("tcp", addr, config)
}

// echo writes data through a tunnel to `to` while reading it back.
func echo(client *ssh.Client, to string, data []byte) ([]byte, error) {
	conn, err := client.Dial("tcp", to)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	wrote := make(chan error, 1)
	go func() {
		_, err := conn.Write(data)
		if err == nil {
			// The echo server closes after our EOF.
			err = conn.(interface{ CloseWrite() error }).CloseWrite()
		}
		wrote <- err
	}()
	back, err := io.ReadAll(conn)
	if err != nil {
		return nil, err
	}
	return back, <-wrote
}

func main() {
	host := flag.String("host", "127.0.0.1", "the jump host's address")
	port := flag.Int("port", 0, "the jump host's port")
	user := flag.String("user", "", "user name")
	keyPath := flag.String("key", "", "ed25519 private key (OpenSSH format)")
	code := flag.String("code", "", "the current code")
	wrongCode := flag.String("wrong-code", "", "a wrong code")
	echoTo := flag.String("echo", "", "HOST:PORT granted, an echo server")
	refused := flag.String("refused", "", "HOST:PORT not granted")
	dataPath := flag.String("data", "", "the bytes to send through --echo")
	outPath := flag.String("out", "", "where to write what came back")
	flag.Parse()

	pem, err := os.ReadFile(*keyPath)
	if err != nil {
		fail("key", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		fail("key", err)
	}
	data, err := os.ReadFile(*dataPath)
	if err != nil {
		fail("data", err)
	}
	addr := net.JoinHostPort(*host, strconv.Itoa(*port))

	client, err := login(addr, *user, signer, *code)
	if err != nil {
		fail("login", err)
	}
	say("after code", "authenticated")
	back, err := echo(client, *echoTo, data)
	if err != nil {
		fail("echo", err)
	}
	if err := os.WriteFile(*outPath, back, 0o600); err != nil {
		fail("out", err)
	}
	if conn, err := client.Dial("tcp", *refused); err != nil {
		say("refused", err)
	} else {
		conn.Close()
		say("refused", "<nil>")
	}
	client.Close()

	if client, err := login(addr, *user, signer, *wrongCode); err != nil {
		say("wrong code", err)
	} else {
		client.Close()
		say("wrong code", "authenticated")
	}
}
