// nettest: the measuring half of kubeup's smoke-test image (busybox does the
// rest). Standard library only.
//
//	nettest serve ADDR           accept forever; discard what is sent
//	nettest send ADDR BYTES      send BYTES, print "throughput MB/s"
//	nettest connect ADDR N       N connects, print p50/p90/p99 in µs
//	nettest get ADDR             HTTP/1.0 GET /, print the response body
//	                             (busybox-static's wget crashes)
//	nettest http ADDR TEXT       HTTP server answering TEXT and the path
//	                             to every request, with keep-alive (the
//	                             ingress tests and hack/bench-ingress.sh)
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: nettest serve ADDR | send ADDR BYTES | connect ADDR N")
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2])
	case "send":
		send(os.Args[2], arg(3))
	case "connect":
		connect(os.Args[2], int(arg(3)))
	case "get":
		get(os.Args[2])
	case "http":
		if len(os.Args) < 4 {
			fail("usage: nettest http ADDR TEXT")
		}
		serveHTTP(os.Args[2], os.Args[3])
	default:
		fail("unknown command " + os.Args[1])
	}
}

func arg(i int) int64 {
	if len(os.Args) <= i {
		fail("missing argument")
	}
	n, err := strconv.ParseInt(os.Args[i], 10, 64)
	if err != nil {
		fail(err.Error())
	}
	return n
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "nettest:", msg)
	os.Exit(2)
}

func serve(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fail(err.Error())
	}
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			// The byte count back: the sender knows all of it arrived.
			fmt.Fprintf(c, "%d\n", n)
		}()
	}
}

func send(addr string, total int64) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		fail(err.Error())
	}
	buf := make([]byte, 256<<10)
	start := time.Now()
	var sent int64
	for sent < total {
		n := int64(len(buf))
		if total-sent < n {
			n = total - sent
		}
		w, err := c.Write(buf[:n])
		if err != nil {
			fail(err.Error())
		}
		sent += int64(w)
	}
	c.(*net.TCPConn).CloseWrite()
	ack, _ := io.ReadAll(c)
	secs := time.Since(start).Seconds()
	got, _ := strconv.ParseInt(string(ack[:max(len(ack)-1, 0)]), 10, 64)
	if got != total {
		fail(fmt.Sprintf("sent %d bytes, the server got %d", total, got))
	}
	fmt.Printf("%.1f MB/s (%d bytes in %.3fs)\n", float64(total)/secs/1e6, total, secs)
}

func connect(addr string, n int) {
	d := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			fail(err.Error())
		}
		d = append(d, time.Since(start))
		c.Close()
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	p := func(q float64) int64 { return d[int(q*float64(len(d)-1))].Microseconds() }
	fmt.Printf("connect p50 %dµs p90 %dµs p99 %dµs (%d connects)\n", p(0.5), p(0.9), p(0.99), n)
}

func get(addr string) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		fail(err.Error())
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", addr)
	resp, err := io.ReadAll(c)
	if err != nil {
		fail(err.Error())
	}
	_, body, ok := strings.Cut(string(resp), "\r\n\r\n")
	if !ok || !strings.HasPrefix(string(resp), "HTTP/1.") {
		fail("not an HTTP response: " + string(resp))
	}
	fmt.Print(body)
}

func serveHTTP(addr, text string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", text, r.URL.Path)
	})
	fail(http.ListenAndServe(addr, h).Error())
}
