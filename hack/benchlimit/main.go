// benchlimit writes pods to the API server as fast as it takes them: created already bound
// (spec.nodeName set) or created and then bound through pods/binding. It is the Go twin of the
// Python loop in hack/bench_limit.py, to tell whether the Python client is what limits the
// measured rate. Standard library only: one HTTP/2 connection shared by all workers, as
// client-go does, or one HTTP/1.1 connection per worker with -http1.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	server := flag.String("server", "", "API server URL")
	caFile := flag.String("ca", "", "CA certificate file")
	certFile := flag.String("cert", "", "client certificate file")
	keyFile := flag.String("key", "", "client key file")
	namespace := flag.String("namespace", "", "namespace of the pods")
	mode := flag.String("mode", "bound", "bound (nodeName set) or bind (create, then pods/binding)")
	concurrency := flag.Int("concurrency", 16, "requests in flight")
	planFile := flag.String("plan", "", "JSON list of [pod, node] pairs")
	scheduler := flag.String("scheduler", "bench-nobody", "schedulerName of the pods")
	http1 := flag.Bool("http1", false, "one HTTP/1.1 connection per worker instead of HTTP/2")
	flag.Parse()

	var plan [][2]string
	raw, err := os.ReadFile(*planFile)
	must(err)
	must(json.Unmarshal(raw, &plan))

	pool := x509.NewCertPool()
	ca, err := os.ReadFile(*caFile)
	must(err)
	pool.AppendCertsFromPEM(ca)
	pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	must(err)
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}},
		ForceAttemptHTTP2:   !*http1,
		MaxIdleConnsPerHost: *concurrency,
		MaxConnsPerHost:     *concurrency,
	}
	if *http1 {
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	client := &http.Client{Transport: transport}

	// Bodies are serialised before the clock starts, as in the Python client.
	type request struct{ url, body []byte }
	podsURL := fmt.Sprintf("%s/api/v1/namespaces/%s/pods", *server, *namespace)
	work := make([][]request, len(plan))
	for i, entry := range plan {
		name, node := entry[0], entry[1]
		spec := map[string]any{
			"schedulerName": *scheduler,
			"containers": []any{map[string]any{"name": "c", "image": "x",
				"resources": map[string]any{"limits": map[string]any{"nvidia.com/gpu": "1"}}}},
		}
		if *mode == "bound" {
			spec["nodeName"] = node
		}
		pod, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": name}, "spec": spec})
		work[i] = []request{{[]byte(podsURL), pod}}
		if *mode == "bind" {
			binding, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Binding",
				"metadata": map[string]any{"name": name},
				"target":   map[string]any{"apiVersion": "v1", "kind": "Node", "name": node}})
			work[i] = append(work[i], request{[]byte(podsURL + "/" + name + "/binding"), binding})
		}
	}

	post := func(r request) bool {
		resp, err := client.Post(string(r.url), "application/json", bytes.NewReader(r.body))
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode < 300
	}
	// Warm the connections up: the TLS handshakes are not measured.
	probe, _ := http.NewRequest("GET", *server+"/readyz", nil)
	var warm sync.WaitGroup
	for i := 0; i < *concurrency; i++ {
		warm.Add(1)
		go func() {
			defer warm.Done()
			if resp, err := client.Do(probe); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	warm.Wait()

	var next, failed atomic.Int64
	var done sync.WaitGroup
	started := time.Now()
	for w := 0; w < *concurrency; w++ {
		done.Add(1)
		go func() {
			defer done.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(work) {
					return
				}
				for _, r := range work[i] {
					if !post(r) {
						failed.Add(1)
						break
					}
				}
			}
		}()
	}
	done.Wait()
	out, _ := json.Marshal(map[string]any{
		"started": float64(started.UnixNano()) / 1e9,
		"seconds": time.Since(started).Seconds(),
		"failed":  failed.Load(),
	})
	fmt.Println(string(out))
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
