// A small Go program that drives etcd's own Go client (clientv3, concurrency, naming) and
// grpc-go against a test etcd, so tests/go_interop.rs can check that the crate and Go agree.
//
// Usage: probe ENDPOINT COMMAND ARGS...
//
// Every line meant for the test starts with "@@ " followed by one JSON object. Commands read
// further instructions from stdin, one per line; the program exits when stdin closes, and in
// any case after two minutes, so it never outlives a test.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	"go.etcd.io/etcd/clientv3/naming/endpoints"
	"go.etcd.io/etcd/clientv3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const callTimeout = 2 * time.Second

func emit(v map[string]interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("encode output: %v", err)
	}
	fmt.Printf("@@ %s\n", b)
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "probe: "+format+"\n", args...)
	os.Exit(1)
}

// commands yields stdin lines split into words; the channel closes at end of input.
func commands() <-chan []string {
	ch := make(chan []string)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if words := strings.Fields(sc.Text()); len(words) > 0 {
				ch <- words
			}
		}
	}()
	return ch
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func createRevision(cli *clientv3.Client, key string) int64 {
	c, cancel := ctx()
	defer cancel()
	resp, err := cli.Get(c, key)
	if err != nil {
		fail("get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		fail("key %s is gone", key)
	}
	return resp.Kvs[0].CreateRevision
}

func session(cli *clientv3.Client) *concurrency.Session {
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		fail("session: %v", err)
	}
	return s
}

// mutex NAME: takes concurrency.Mutex NAME (waiting as long as it takes), reports its key, the
// key's create_revision and the header revision the Mutex kept; unlocks on "unlock" or EOF.
func mutex(cli *clientv3.Client, name string) {
	s := session(cli)
	defer s.Close()
	m := concurrency.NewMutex(s, name)
	if err := m.Lock(context.Background()); err != nil {
		fail("lock %s: %v", name, err)
	}
	emit(map[string]interface{}{
		"event":           "locked",
		"key":             m.Key(),
		"create_revision": createRevision(cli, m.Key()),
		"header_revision": m.Header().Revision,
	})
	for words := range commands() {
		if words[0] == "unlock" {
			break
		}
	}
	c, cancel := ctx()
	defer cancel()
	if err := m.Unlock(c); err != nil {
		fail("unlock: %v", err)
	}
	emit(map[string]interface{}{"event": "unlocked"})
}

// campaign NAME VALUE: campaigns (waiting as long as it takes) and reports the leader key and
// revision; then "proclaim VALUE" and "resign".
func campaign(cli *clientv3.Client, name, value string) {
	s := session(cli)
	defer s.Close()
	e := concurrency.NewElection(s, name)
	if err := e.Campaign(context.Background(), value); err != nil {
		fail("campaign %s: %v", name, err)
	}
	emit(map[string]interface{}{
		"event":           "elected",
		"key":             e.Key(),
		"rev":             e.Rev(),
		"create_revision": createRevision(cli, e.Key()),
	})
	for words := range commands() {
		c, cancel := ctx()
		switch words[0] {
		case "proclaim":
			if err := e.Proclaim(c, words[1]); err != nil {
				fail("proclaim: %v", err)
			}
			emit(map[string]interface{}{"event": "proclaimed", "value": words[1]})
		case "resign":
			if err := e.Resign(c); err != nil {
				fail("resign: %v", err)
			}
			emit(map[string]interface{}{"event": "resigned"})
			cancel()
			return
		}
		cancel()
	}
}

// observe NAME: reports every leader and proclaimed value Election.Observe yields.
func observe(cli *clientv3.Client, name string) {
	s := session(cli)
	defer s.Close()
	e := concurrency.NewElection(s, name)
	c, cancel := context.WithCancel(context.Background())
	defer cancel()
	leaders := e.Observe(c)
	stdin := commands()
	for {
		select {
		case resp, ok := <-leaders:
			if !ok {
				fail("observe %s ended", name)
			}
			kv := resp.Kvs[0]
			emit(map[string]interface{}{
				"event":           "leader",
				"key":             string(kv.Key),
				"value":           string(kv.Value),
				"create_revision": kv.CreateRevision,
				"mod_revision":    kv.ModRevision,
			})
		case _, ok := <-stdin:
			if !ok {
				return
			}
		}
	}
}

// endpoints: "list TARGET" reports what endpoints.Manager.List returns for TARGET;
// "add TARGET KEY ADDR" adds an endpoint without metadata, as a Go service would.
func endpointsCmd(cli *clientv3.Client) {
	for words := range commands() {
		em, err := endpoints.NewManager(cli, words[1])
		if err != nil {
			fail("endpoints manager: %v", err)
		}
		c, cancel := ctx()
		switch words[0] {
		case "list":
			eps, err := em.List(c)
			if err != nil {
				fail("list: %v", err)
			}
			out := map[string]interface{}{}
			for key, ep := range eps {
				out[key] = map[string]interface{}{"Addr": ep.Addr, "Metadata": ep.Metadata}
			}
			emit(map[string]interface{}{"event": "list", "endpoints": out})
		case "add":
			if err := em.AddEndpoint(c, words[2], endpoints.Endpoint{Addr: words[3]}); err != nil {
				fail("add endpoint: %v", err)
			}
			emit(map[string]interface{}{"event": "added"})
		}
		cancel()
	}
}

// serve ID...: one gRPC server per id on 127.0.0.1 (the standard health service); every
// response carries the header "instance: ID".
func serve(ids []string) {
	addrs := map[string]interface{}{}
	for _, id := range ids {
		id := id
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fail("listen: %v", err)
		}
		srv := grpc.NewServer(grpc.UnaryInterceptor(func(c context.Context, req interface{}, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (interface{}, error) {
			grpc.SetHeader(c, metadata.Pairs("instance", id))
			return h(c, req)
		}))
		healthpb.RegisterHealthServer(srv, health.NewServer())
		go srv.Serve(lis)
		addrs[id] = lis.Addr().String()
	}
	emit(map[string]interface{}{"event": "serving", "addrs": addrs})
	for range commands() {
	}
}

// client TARGET POLICY: dials TARGET through etcd's resolver with the load-balancing POLICY
// (pick_first, round_robin); "calls N" makes N health checks and reports which instance
// answered each.
func client(cli *clientv3.Client, target, policy string) {
	r, err := resolver.NewBuilder(cli)
	if err != nil {
		fail("resolver: %v", err)
	}
	conn, err := grpc.Dial(target,
		grpc.WithInsecure(),
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, policy)),
	)
	if err != nil {
		fail("dial %s: %v", target, err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	emit(map[string]interface{}{"event": "dialed", "target": target, "policy": policy})
	for words := range commands() {
		if words[0] != "calls" {
			continue
		}
		n, err := strconv.Atoi(words[1])
		if err != nil {
			fail("calls %s: %v", words[1], err)
		}
		hits := map[string]int{}
		errs := map[string]int{}
		for i := 0; i < n; i++ {
			c, cancel := context.WithTimeout(context.Background(), callTimeout)
			var md metadata.MD
			_, err := hc.Check(c, &healthpb.HealthCheckRequest{}, grpc.Header(&md), grpc.WaitForReady(true))
			cancel()
			if err != nil {
				errs[status.Code(err).String()]++
			} else if v := md.Get("instance"); len(v) == 1 {
				hits[v[0]]++
			} else {
				errs["no instance header"]++
			}
		}
		emit(map[string]interface{}{"event": "calls", "hits": hits, "errors": errs})
	}
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: probe ENDPOINT COMMAND ARGS...")
	}
	time.AfterFunc(2*time.Minute, func() { fail("still running after two minutes") })
	endpoint, cmd, args := os.Args[1], os.Args[2], os.Args[3:]
	if cmd == "serve" {
		serve(args)
		return
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		fail("connect %s: %v", endpoint, err)
	}
	defer cli.Close()
	need := func(n int) {
		if len(args) != n {
			fail("%s takes %d arguments, got %d", cmd, n, len(args))
		}
	}
	switch cmd {
	case "mutex":
		need(1)
		mutex(cli, args[0])
	case "campaign":
		need(2)
		campaign(cli, args[0], args[1])
	case "observe":
		need(1)
		observe(cli, args[0])
	case "endpoints":
		need(0)
		endpointsCmd(cli)
	case "client":
		need(2)
		client(cli, args[0], args[1])
	default:
		fail("unknown command %s", cmd)
	}
}
